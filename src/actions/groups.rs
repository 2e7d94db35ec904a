//! The process groups of running scripts: known to this process (so shutdown can end them
//! after the grace period) and recorded on disk (so the next process, after a crash, ends a
//! survivor before its job runs the script again alongside it).
//!
//! A record is a file `<dir>/<pgid>` holding the leader's start time (from `/proc`) and the run
//! id; the start time tells a survivor from an unrelated process that reused the pid.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

fn running() -> &'static Mutex<HashSet<i32>> {
    static RUNNING: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    RUNNING.get_or_init(Default::default)
}

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Where the records are kept (`DATA/scripts-running`); without it nothing is recorded.
pub fn record_in(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let _ = DIR.set(dir.to_path_buf());
    Ok(())
}

/// A script's running process group; dropped while it runs (the job's task was cancelled),
/// it kills the group.
pub struct Group {
    pgid: Option<i32>,
    record: Option<PathBuf>,
    finished: bool,
    /// Also end the leader's descendants in other groups and sessions (ansible-playbook's
    /// workers start sessions of their own).
    tree: bool,
}

impl Group {
    /// The group led by `pid` (the script was spawned with `process_group(0)`).
    pub fn started(pid: Option<u32>, run_id: &str) -> Group {
        let pgid = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1);
        let record = pgid.and_then(|g| {
            let path = DIR.get()?.join(g.to_string());
            let start = start_time(g)?;
            std::fs::write(&path, format!("{start} {run_id}\n")).ok()?;
            Some(path)
        });
        if let Some(g) = pgid {
            running()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(g);
        }
        Group {
            pgid,
            record,
            finished: false,
            tree: false,
        }
    }

    /// [`Group::started`], and killing it also kills every descendant of the leader.
    pub fn started_tree(pid: Option<u32>, run_id: &str) -> Group {
        let mut g = Group::started(pid, run_id);
        g.tree = true;
        g
    }

    /// Kills every process of the group (and, for a tree, every descendant of its leader).
    pub fn kill(&self) {
        if let Some(g) = self.pgid {
            if self.tree {
                kill_tree(g);
            }
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
    }

    /// The script ended and its output closed: the group is left alone.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.finished {
            self.kill();
        }
        if let Some(g) = self.pgid {
            running()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&g);
        }
        if let Some(r) = &self.record {
            let _ = std::fs::remove_file(r);
        }
    }
}

/// Kills every script group still running (after the shutdown grace). Returns how many.
pub fn kill_all() -> usize {
    let groups: Vec<i32> = running()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    for g in &groups {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
    }
    groups.len()
}

/// Parent of each process, from `/proc/<pid>/stat` (field 4).
fn parents() -> Vec<(i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 1..];
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// The descendants of `root` (not `root` itself).
fn descendants(root: i32) -> Vec<i32> {
    let all = parents();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Stops `root`'s descendants (so none starts another), then kills them and `root`. Processes
/// that detached themselves (reparented away) are out of reach, as on a remote host.
fn kill_tree(root: i32) {
    if root <= 1 {
        return;
    }
    let first = descendants(root);
    let _ = nix::sys::signal::kill(Pid::from_raw(root), Signal::SIGSTOP);
    for p in &first {
        let _ = nix::sys::signal::kill(Pid::from_raw(*p), Signal::SIGSTOP);
    }
    // What was started between the first look and the stops.
    let mut all = descendants(root);
    all.extend(first);
    all.push(root);
    for p in all.into_iter().filter(|p| *p > 1) {
        let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// The start time of process `pid` (clock ticks since boot; field 22 of `/proc/<pid>/stat`).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Ends the script groups a previous process recorded and left running (it crashed or was
/// killed), before any job can run them again. Returns the run ids of the survivors it ended.
pub fn end_survivors(dir: &Path) -> Vec<String> {
    let mut ended = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return ended;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let pgid = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|g| *g > 1);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let (start, run_id) = text.trim().split_once(' ').unwrap_or(("", ""));
        if let Some(g) = pgid
            && start
                .parse::<u64>()
                .ok()
                .is_some_and(|s| start_time(g) == Some(s))
        {
            tracing::warn!(
                pgid = g,
                run = run_id,
                "a script of the previous process is still running: ending its process group before its job runs again"
            );
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            let until = Instant::now() + Duration::from_secs(5);
            while start_time(g).is_some() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            ended.push(run_id.to_string());
        }
        let _ = std::fs::remove_file(&path);
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_survivor_is_ended_and_a_reused_pid_is_not() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::fs::write(
            dir.path().join(pid.to_string()),
            format!("{} job:0\n", start_time(pid).unwrap()),
        )
        .unwrap();
        // A record whose start time does not match: another process got the pid.
        let me = std::process::id() as i32;
        std::fs::write(dir.path().join(me.to_string()), "1 other:0\n").unwrap();
        let ended = end_survivors(dir.path());
        assert_eq!(ended, vec!["job:0".to_string()]);
        let status = child.wait().unwrap();
        assert!(!status.success(), "the survivor was killed");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
