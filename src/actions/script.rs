//! `run_script`: runs a file from the scripts directory, argv without a shell, event on stdin.
//!
//! Each script gets a process group of its own, so a timeout ends everything it started (a
//! shell script's children included), not just the direct child.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Outcome, RunContext};
use crate::rulebook::compile::Compile;
use crate::rulebook::model::RunScriptSpec;
use crate::templates::{Templates, Text};

/// stdout and stderr are each kept up to this many bytes.
pub const OUTPUT_CAP: usize = 64 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ScriptAction {
    /// Absolute path, checked at load to be a file inside the scripts directory.
    pub path: PathBuf,
    /// The name as written (relative to the scripts directory).
    pub name: String,
    pub args: Vec<Text>,
    pub env: Vec<(String, Text)>,
    pub timeout: Duration,
    pub retries: u32,
}

/// A rendered `run_script`: exactly what is executed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScriptRun {
    pub script: String,
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    #[serde(with = "millis")]
    pub timeout: Duration,
}

pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `run_script:` compiled; the script must be an executable file inside `scripts`.
pub(crate) fn compile(
    cx: &mut Compile,
    s: &RunScriptSpec,
    prefix: &str,
    scripts: &Path,
    t: &mut Templates,
) -> Option<ScriptAction> {
    let path = resolve_script(scripts, &s.script.value)
        .map_err(|m| cx.err(&s.script.referenced, m))
        .ok();
    let mut args = Vec::new();
    for (i, a) in s.args.iter().enumerate() {
        args.extend(cx.template(t, format!("{prefix}/args/{i}"), a, "args"));
    }
    let mut env = Vec::new();
    for (k, v) in &s.env {
        if k.starts_with("RULEHOOK_") {
            cx.err(
                &v.referenced,
                format!("env `{k}`: RULEHOOK_* variables are set by rulehook"),
            );
        }
        env.extend(
            cx.template(t, format!("{prefix}/env/{k}"), v, "env")
                .map(|v| (k.clone(), v)),
        );
    }
    let timeout = match &s.timeout {
        Some(d) => cx.duration(d, "timeout")?,
        None => DEFAULT_TIMEOUT,
    };
    if args.len() != s.args.len() || env.len() != s.env.len() {
        return None;
    }
    Some(ScriptAction {
        path: path?,
        name: s.script.value.clone(),
        args,
        env,
        timeout,
        retries: s.retries,
    })
}

/// The script's absolute path; it must be an executable file inside the scripts directory.
fn resolve_script(dir: &Path, name: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = resolve_in(dir, name, "script")?;
    let meta = std::fs::metadata(&path).map_err(|e| format!("script `{name}`: {e}"))?;
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("script `{name}` is not executable (chmod +x it)"));
    }
    let mut head = [0u8; 4];
    let read = std::fs::File::open(&path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| format!("script `{name}`: {e}"))?;
    if !startable(&head[..read]) {
        return Err(format!(
            "script `{name}` cannot be started: it has no `#!` line naming its interpreter (add one, e.g. `#!/bin/sh`) and is not a program"
        ));
    }
    Ok(path)
}

/// Whether a file starting with `head` can be executed: a script with a `#!` line, or a
/// program (ELF). Anything else fails with "Exec format error" each time it is run.
fn startable(head: &[u8]) -> bool {
    head.starts_with(b"#!") || head.starts_with(b"\x7fELF")
}

/// Why `path` could not be started (`e`), said so that the cause can be found: a script whose
/// `#!` interpreter does not exist fails as if the script itself were missing.
fn start_error(script: &str, path: &Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound && path.exists() {
        let line = std::fs::read(path)
            .ok()
            .and_then(|b| {
                let first = b.split(|c| *c == b'\n').next()?.to_vec();
                String::from_utf8(first).ok()
            })
            .filter(|l| l.starts_with("#!"));
        if let Some(line) = line {
            return format!(
                "cannot start {script}: the interpreter its first line names (`{}`) was not found",
                line.trim_end()
            );
        }
    }
    format!("cannot start {script}: {e}")
}

/// The absolute path of `name`, which must be a file inside the scripts directory `dir`
/// (`what` names it in errors: a script, a playbook, an inventory).
pub(crate) fn resolve_in(dir: &Path, name: &str, what: &str) -> Result<PathBuf, String> {
    let root = dir
        .canonicalize()
        .map_err(|e| format!("scripts directory `{}` cannot be read: {e}", dir.display()))?;
    if Path::new(name).is_absolute() {
        return Err(format!(
            "{what} `{name}` must be a path relative to the scripts directory"
        ));
    }
    let path = root
        .join(name)
        .canonicalize()
        .map_err(|_| format!("{what} `{name}` does not exist in {}", dir.display()))?;
    if !path.starts_with(&root) {
        return Err(format!("{what} `{name}` is outside the scripts directory"));
    }
    let meta = std::fs::metadata(&path).map_err(|e| format!("{what} `{name}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{what} `{name}` is not a file"));
    }
    Ok(path)
}

impl ScriptAction {
    pub fn render(&self, t: &Templates, ctx: &minijinja::Value) -> Result<ScriptRun, String> {
        let args = self
            .args
            .iter()
            .map(|a| t.render(a, ctx))
            .collect::<Result<_, _>>()?;
        let env = self
            .env
            .iter()
            .map(|(k, v)| Ok((k.clone(), t.render(v, ctx)?)))
            .collect::<Result<_, String>>()?;
        Ok(ScriptRun {
            script: self.name.clone(),
            path: self.path.clone(),
            args,
            env,
            timeout: self.timeout,
        })
    }
}

impl ScriptRun {
    pub async fn execute(&self, run: &RunContext) -> Outcome {
        let mut cmd = Command::new(&self.path);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RULEHOOK_EVENT_ID", &run.event_id)
            .env("RULEHOOK_SOURCE", &run.source)
            .env("RULEHOOK_RULE", &run.rule)
            .env("RULEHOOK_RUN_ID", &run.run_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = self.path.parent() {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::failed(start_error(&self.script, &self.path, &e)),
        };
        let group = super::groups::Group::started(child.id(), &run.run_id);
        let input = serde_json::to_vec(&run.input).unwrap_or_default();
        let stdin = child.stdin.take();
        let feeder = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // A script that never reads its input closes the pipe: not an error.
                let _ = stdin.write_all(&input).await;
            }
        });
        let (out_buf, err_buf) = (Captured::default(), Captured::default());
        let mut out = tokio::spawn(read_capped(child.stdout.take(), out_buf.clone()));
        let mut err = tokio::spawn(read_capped(child.stderr.take(), err_buf.clone()));

        // The timeout covers the whole run: waiting for the script and reading its output.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let status = tokio::time::timeout_at(deadline, child.wait()).await;
        let mut held_open = false;
        if status.is_ok() {
            // It exited; its output closes with it unless something it started keeps it open.
            let until = deadline.min(tokio::time::Instant::now() + PIPE_GRACE);
            let drained = tokio::time::timeout_at(until, async {
                (&mut out).await.ok();
                (&mut err).await.ok()
            })
            .await;
            held_open = drained.is_err();
        }
        feeder.abort();
        out.abort();
        err.abort();
        let timed_out = status.is_err();
        if timed_out || held_open {
            group.kill();
            let _ = child.kill().await;
            drop(group);
        } else {
            group.finish();
        }
        let (stdout, stderr) = (out_buf.text(), err_buf.text());
        match status {
            Ok(Ok(st)) if held_open => Outcome {
                ok: false,
                exit_code: st.code(),
                stdout,
                stderr,
                error: Some(format!(
                    "{} exited, but a process it started kept its output open; its process group was killed",
                    self.script
                )),
                retryable: true,
                ..Outcome::default()
            },
            Ok(Ok(st)) => Outcome {
                ok: st.success(),
                exit_code: st.code(),
                error: (!st.success()).then(|| match st.code() {
                    Some(c) => format!("{} exited with status {c}", self.script),
                    None => format!("{} was killed by a signal", self.script),
                }),
                stdout,
                stderr,
                retryable: true,
                ..Outcome::default()
            },
            Ok(Err(e)) => Outcome::failed(format!("waiting for {} failed: {e}", self.script)),
            Err(_) => Outcome {
                ok: false,
                exit_code: None,
                stdout,
                stderr,
                error: Some(format!(
                    "{} timed out after {}; its process group was killed",
                    self.script,
                    humantime::format_duration(self.timeout)
                )),
                retryable: true,
                ..Outcome::default()
            },
        }
    }
}

/// How long a script's output may stay open after it exited (a background process it started
/// holding stdout) before the rest of its group is killed.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Output read so far; kept when the reading is stopped.
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub(crate) fn text(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_CAP`] bytes in `into`.
pub(crate) async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>, into: Captured) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut kept = into.0.lock().unwrap_or_else(|e| e.into_inner());
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn run(path: PathBuf, args: Vec<String>, timeout: Duration) -> ScriptRun {
        ScriptRun {
            script: "t".into(),
            path,
            args,
            env: vec![],
            timeout,
        }
    }

    /// A script without a `#!` line fails every run with "Exec format error": refused at
    /// load. One whose interpreter is missing says so when it fails, not "No such file".
    #[tokio::test]
    async fn a_script_that_cannot_start_is_named_for_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "bare.sh", "echo hi\n");
        let err = resolve_script(dir.path(), "bare.sh").unwrap_err();
        assert!(err.contains("has no `#!` line"), "{err}");
        script(dir.path(), "ok.sh", "#!/bin/sh\necho hi\n");
        assert!(resolve_script(dir.path(), "ok.sh").is_ok());
        let program = std::fs::read("/bin/true").unwrap();
        std::fs::write(dir.path().join("true"), program).unwrap();
        std::fs::set_permissions(
            dir.path().join("true"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(resolve_script(dir.path(), "true").is_ok());
        let p = script(dir.path(), "typo.py", "#!/usr/bin/pyhton3\nprint(1)\n");
        let out = run(p, vec![], Duration::from_secs(5)).execute(&ctx()).await;
        let err = out.error.unwrap_or_default();
        assert!(
            err.contains(
                "the interpreter its first line names (`#!/usr/bin/pyhton3`) was not found"
            ),
            "{err}"
        );
    }

    fn ctx() -> RunContext {
        RunContext {
            run_id: "e1:r:0".into(),
            event_id: "e1".into(),
            source: "s".into(),
            rule: "r".into(),
            input: serde_json::json!({"event": {"a": 1}, "meta": {}}),
        }
    }

    #[tokio::test]
    async fn passes_args_env_and_stdin_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "s.sh",
            "#!/bin/sh\necho \"$1|$RULEHOOK_RUN_ID\"\ncat\necho oops >&2\nexit 3\n",
        );
        let o = run(p, vec!["a b; rm -rf /".into()], Duration::from_secs(10))
            .execute(&ctx())
            .await;
        assert!(!o.ok);
        assert_eq!(o.exit_code, Some(3));
        assert!(
            o.stdout
                .starts_with("a b; rm -rf /|e1:r:0\n{\"event\":{\"a\":1}"),
            "{}",
            o.stdout
        );
        assert_eq!(o.stderr, "oops\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-alive");
        let p = script(
            dir.path(),
            "slow.sh",
            &format!(
                "#!/bin/sh\n(sleep 2; touch {}) &\nsleep 30\n",
                marker.display()
            ),
        );
        let o = run(p, vec![], Duration::from_millis(300))
            .execute(&ctx())
            .await;
        assert!(!o.ok);
        assert!(o.error.unwrap().contains("timed out"));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "the background child survived the timeout"
        );
    }

    #[tokio::test]
    async fn a_background_child_holding_stdout_does_not_hold_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        // Exits at once, but leaves a child that keeps stdout open for a minute.
        let p = script(
            dir.path(),
            "bg.sh",
            "#!/bin/sh\necho started\nsleep 60 &\nexit 0\n",
        );
        let began = std::time::Instant::now();
        let o = run(p, vec![], Duration::from_secs(30))
            .execute(&ctx())
            .await;
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            began.elapsed()
        );
        assert!(!o.ok);
        assert_eq!(o.stdout, "started\n");
        assert!(o.error.unwrap().contains("kept its output open"));
        // Within the timeout too: a script that never exits and whose child holds the pipe.
        let p = script(
            dir.path(),
            "hang.sh",
            "#!/bin/sh\necho partial\nsleep 60 &\nwait\n",
        );
        let began = std::time::Instant::now();
        let o = run(p, vec![], Duration::from_millis(500))
            .execute(&ctx())
            .await;
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(
            o.stdout, "partial\n",
            "output read before the timeout is kept"
        );
        assert!(o.error.unwrap().contains("timed out"));
    }

    #[tokio::test]
    async fn a_cancelled_run_kills_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let marker = dir.path().join("survived");
        let p = script(
            dir.path(),
            "long.sh",
            &format!(
                "#!/bin/sh\ntouch {}\n(sleep 1; touch {}) &\nsleep 30\n",
                started.display(),
                marker.display()
            ),
        );
        let r = run(p, vec![], Duration::from_secs(30));
        let c = ctx();
        let ran = tokio::time::timeout(Duration::from_millis(300), r.execute(&c)).await;
        assert!(ran.is_err(), "the run ended by itself: {ran:?}");
        assert!(started.exists(), "the script never started");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the group outlived the cancelled run");
    }

    #[tokio::test]
    async fn caps_output() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "big.sh",
            "#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' x\n",
        );
        let o = run(p, vec![], Duration::from_secs(10))
            .execute(&ctx())
            .await;
        assert!(o.ok);
        assert_eq!(o.stdout.len(), OUTPUT_CAP);
    }
}
