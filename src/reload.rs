//! Hot reload: watch the rulebooks, scripts and templates directories (debounced, so editors
//! that save by rename and `git pull` replacing files count once), rebuild the whole rule set,
//! and swap it in only when it validates. `SIGHUP` triggers the same path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::RecursiveMode;
use notify_debouncer_full::new_debouncer;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::rules::{Dirs, LoadError};
use crate::telemetry::names;

/// What `GET /api/status` shows about the rule set.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    pub loaded_at: String,
    pub sources: usize,
    pub rules: usize,
    pub reloads: u64,
    /// The last failed reload (cleared by a successful one): the set serving is the previous.
    pub last_error: Option<ReloadError>,
    /// Listening sources the last reload could not start (the address is taken …): the rest
    /// of that reload applies; each is tried again at the next one (SIGHUP).
    pub listen_errors: Vec<crate::transport::ListenFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadError {
    pub at: String,
    pub errors: Vec<String>,
    pub locations: Vec<Location>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Location {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

fn now() -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    crate::domain::rfc3339(ms)
}

/// The reloader: shared status plus the fingerprint of the files last loaded.
pub struct Reloader {
    dirs: Dirs,
    engine: Arc<Engine>,
    /// The listening sources' transports, brought in line with each new set.
    transports: Option<Arc<crate::transport::Transports>>,
    status: Arc<Mutex<Status>>,
    fingerprint: Mutex<BTreeMap<PathBuf, Vec<u8>>>,
}

impl Reloader {
    pub fn new(
        dirs: Dirs,
        engine: Arc<Engine>,
        transports: Option<Arc<crate::transport::Transports>>,
    ) -> Arc<Reloader> {
        let set = engine.rules();
        let status = Status {
            loaded_at: now(),
            sources: set.sources.len(),
            rules: set.rules.len(),
            ..Status::default()
        };
        let fp = fingerprint(&dirs);
        Arc::new(Reloader {
            dirs,
            engine,
            transports,
            status: Arc::new(Mutex::new(status)),
            fingerprint: Mutex::new(fp),
        })
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads the directories again; swaps the new set in only if it is valid, then brings the
    /// listening sources' transports in line with it (blocking on them: call it off the async
    /// workers, as [`Reloader::spawn`] does). `force` reloads even when no file changed
    /// (SIGHUP: a `${env:…}` or `${file:…}` secret may have, or a taken address be free now).
    pub fn reload(&self, force: bool) -> bool {
        let fp = fingerprint(&self.dirs);
        {
            let mut last = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *last == fp {
                return false;
            }
            *last = fp;
        }
        match crate::rules::load_with_snapshot(&self.dirs) {
            Ok((set, snapshot)) => {
                // Warnings already given (at start or a reload before) are not repeated.
                let before = self.engine.rules();
                for w in set.warnings.iter().filter(|w| !before.warnings.contains(w)) {
                    tracing::warn!("{w}");
                }
                let set = Arc::new(set);
                // Swapped first: a new source's first message finds it in the set, a removed
                // one's last messages are dropped as removed.
                self.engine.swap_rules(set.clone());
                let listen_errors = self.apply_transports(&set);
                let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                st.loaded_at = now();
                st.sources = set.sources.len();
                st.rules = set.rules.len();
                st.reloads += 1;
                st.last_error = None;
                st.listen_errors = listen_errors;
                drop(st);
                tracing::info!(
                    sources = set.sources.len(),
                    rules = set.rules.len(),
                    "rule set reloaded"
                );
                // Archived for jobs that outlive this process (`engine::versions`).
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let engine = self.engine.clone();
                    rt.spawn(async move { engine.archive_rules(snapshot, set).await });
                }
                metrics::counter!(names::RELOADS).increment(1);
                true
            }
            Err(errs) => {
                for e in &errs.0 {
                    tracing::error!("reload refused, the previous rule set keeps serving: {e}");
                }
                let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                st.last_error = Some(ReloadError {
                    at: now(),
                    errors: errs.0.iter().map(LoadError::to_string).collect(),
                    locations: errs
                        .0
                        .iter()
                        .map(|e| Location {
                            file: e.file.clone(),
                            line: e.line,
                            column: e.column,
                            message: e.message.clone(),
                        })
                        .collect(),
                });
                metrics::counter!(names::RELOAD_ERRORS).increment(1);
                false
            }
        }
    }

    /// Starts, stops and restarts the listening sources' transports for `set`, logging each
    /// change; returns the sources that could not start.
    fn apply_transports(
        &self,
        set: &crate::rules::RuleSet,
    ) -> Vec<crate::transport::ListenFailure> {
        let (Some(transports), Ok(rt)) = (&self.transports, tokio::runtime::Handle::try_current())
        else {
            return Vec::new();
        };
        let applied = rt.block_on(transports.apply(set));
        for name in &applied.stopped {
            tracing::info!(source = %name, "source removed: its transport stopped");
        }
        for name in &applied.restarted {
            tracing::info!(source = %name, "source changed: its transport restarted");
        }
        for b in &applied.started {
            tracing::info!(source = %b.source, address = %b.addr, "source listening");
        }
        for f in &applied.failed {
            tracing::error!(source = %f.source_name, address = %f.address, "reload: {f}; the rest of the reload applies, SIGHUP tries again");
        }
        applied.failed
    }

    /// Watches the directories and listens for SIGHUP until the process ends.
    pub fn spawn(self: &Arc<Self>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<bool>();
        let watch_tx = tx.clone();
        let dirs = [
            self.dirs.rulebooks.clone(),
            self.dirs.scripts.clone(),
            self.dirs.templates.clone(),
        ];
        // The watcher lives on its own thread: notify's callback is synchronous.
        std::thread::Builder::new()
            .name("reload-watch".into())
            .spawn(move || {
                let debouncer = new_debouncer(Duration::from_millis(250), None, move |res: notify_debouncer_full::DebounceEventResult| {
                    if let Ok(events) = res
                        && events.iter().any(|e| !matches!(e.event.kind, notify::EventKind::Access(_)))
                    {
                        let _ = watch_tx.send(false);
                    }
                });
                let mut debouncer = match debouncer {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch for rulebook changes; SIGHUP still reloads");
                        return;
                    }
                };
                for d in &dirs {
                    if Path::new(d).is_dir()
                        && let Err(e) = debouncer.watch(d, RecursiveMode::Recursive)
                    {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory");
                    }
                }
                // Keep the debouncer (and its watcher) alive for the life of the process.
                loop {
                    std::thread::park();
                }
            })
            .ok();
        let hup_tx = tx;
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut hup) = signal(SignalKind::hangup()) {
                while hup.recv().await.is_some() {
                    let _ = hup_tx.send(true);
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(mut force) = rx.recv().await {
                while let Ok(f) = rx.try_recv() {
                    force |= f;
                }
                let me = me.clone();
                let _ = tokio::task::spawn_blocking(move || me.reload(force)).await;
            }
        });
    }
}

/// Contents of every file under the three directories: a reload with nothing changed is skipped.
fn fingerprint(dirs: &Dirs) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for root in [&dirs.rulebooks, &dirs.scripts, &dirs.templates] {
        // Symlink loops are not followed (loading reports them).
        for p in crate::walk::walk(root).files {
            if let Ok(mut meta) = std::fs::read(&p) {
                if let Ok(m) = std::fs::metadata(&p) {
                    use std::os::unix::fs::PermissionsExt;
                    meta.extend_from_slice(&m.permissions().mode().to_le_bytes());
                }
                out.insert(p, meta);
            }
        }
    }
    out
}
