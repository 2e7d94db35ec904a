//! `rulehook serve` wired together: load the rulebooks, open the store, start the engine, bind
//! every transport (HTTP in [`crate::server`], syslog/MQTT/NATS in [`crate::transport`]), serve
//! until SIGTERM, then drain. The command line only turns its flags into a [`Config`].
//!
//! Sits above the transports and the engine; nothing imports it but `cli`.

mod store;
pub mod trim;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::app::AppState;
use crate::engine::{Engine, Role};
use crate::rules::{Dirs, RuleSet};
use crate::server::listen::{Limits, Tls};
pub use store::{StoreConfig, StoreSpec};

/// Everything `serve` needs, already parsed and typed (the command line builds it).
pub struct Config {
    pub dirs: Dirs,
    /// The data directory: the embedded store, `scripts-running/`, `users.json`.
    pub data: PathBuf,
    pub store: StoreConfig,
    pub role: Role,
    /// The HTTP(S) listener's address (port 0: a free one).
    pub listen: SocketAddr,
    pub tls: Tls,
    /// The HTTP listener's connection cap, per-client share and timeouts.
    pub limits: Limits,
    /// Admin access and back pressure; its admin hosts are completed once the listener is bound.
    pub guard: crate::app::guard::Guard,
    /// `--admin-host` names, besides localhost and the listen address.
    pub admin_hosts: Vec<String>,
    pub concurrency: usize,
    pub retain: Duration,
    pub grace: Duration,
    pub body_timeout: Duration,
    /// `--public-url`: the base of `approval.url`.
    pub public_url: Option<String>,
    /// `--approval-check`: the longest a job awaiting approval waits before it looks again.
    pub approval_check: Duration,
}

/// Why `serve` could not start (or stopped with an error); each says what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the rulebooks do not load:\n{0}")]
    Rules(String),
    #[error(
        "--role {0} needs a store shared by several nodes (--store nats://HOST:PORT); the embedded store serves one node, which does everything"
    )]
    RoleNeedsSharedStore(String),
    // The cause is part of the message, not a `source()` as well: printed with its causes,
    // it would be said twice.
    #[error("{what}: {error}")]
    Store {
        what: String,
        error: crate::domain::StoreError,
    },
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    /// A listening source that cannot bind its address (or open its session).
    #[error("{failure}{hint}")]
    Listen {
        failure: crate::transport::ListenFailure,
        /// Why, when it is plain (the HTTP listener holds the address).
        hint: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |error| ServeError::Io { what, error }
}

/// Serves until SIGTERM or Ctrl-C, then stops taking events and waits up to `grace` for
/// running actions.
pub async fn run(config: Config) -> Result<(), ServeError> {
    // Before the rules load: sources register their metric handles with it.
    let metrics = metrics_with_upkeep();
    // What start-up ran so far (arguments, logging, the runtime) is not needed while the
    // rulebooks load: out of the resident set before their memory grows (`trim`).
    trim::release_startup_pages();
    let (set, snapshot) = crate::rules::load_with_snapshot(&config.dirs)
        .map_err(|e| ServeError::Rules(e.to_string()))?;
    log_loaded(&config.dirs, &set);
    // The code that parsed and compiled the rulebooks is not needed again before a reload:
    // out of the resident set before the store opens and the listeners bind (`trim`).
    trim::release_startup_pages();
    let store = store::open(&config.store, config.role, &config.data).await?;
    let tls = crate::server::listen::tls(&config.tls)
        .await
        .map_err(io("cannot set up TLS"))?;
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(io(format!("cannot listen on {}", config.listen)))?;
    let addr = listener.local_addr().map_err(io("cannot listen"))?;
    let mut guard = config.guard;
    guard.admin_hosts = crate::app::admin_plane::AdminHosts::new(addr, &config.admin_hosts);
    guard.live = crate::app::guard::LiveLimit::for_connections(
        config.limits.max_connections,
        config.limits.per_client,
    );
    guard.users = Some(crate::access::Users::in_data(&config.data));
    let set = Arc::new(set);
    print(&banner(&set, config.role, addr, tls.as_ref()));
    let settings = crate::engine::Settings {
        concurrency: config.concurrency,
        retain: config.retain,
        role: config.role,
        shared: config.store.shared(),
        rule_archive: Some(config.dirs.scripts.clone()),
        public_url: config.public_url.clone(),
        approval_check: config.approval_check,
        ..crate::engine::Settings::default()
    };
    // Scripts a crashed predecessor left running end before their jobs can run them again.
    let running = config.data.join("scripts-running");
    crate::actions::groups::end_survivors(&running);
    crate::actions::groups::record_in(&running)
        .map_err(io(format!("cannot create {}", running.display())))?;
    let engine = Engine::new(store, set, settings);
    // Every pending job the store holds: the queue's memory is filled from it in the
    // background, so what memory holds yet (and whether more waits in storage) says nothing here.
    let depth = engine.store().queue.depth();
    tracing::info!(
        pending = depth.pending,
        concurrency = config.concurrency,
        "jobs recovered from the store"
    );
    archive_then_trim(&engine, snapshot).await;
    engine.start();
    let users = watch_users(&engine, &config.data).await;
    // Listening sources (syslog …): bound now, served until the HTTP listener stops.
    let stop_transports = tokio_util::sync::CancellationToken::new();
    let node = config.store.shared().then(|| node_id(&config.data));
    let transports = Arc::new(crate::transport::Transports::new(
        engine.clone(),
        stop_transports.clone(),
        config.data.clone(),
        node,
    ));
    let applied = transports.apply(&engine.rules()).await;
    if let Some(failure) = applied.failed.into_iter().next() {
        return Err(listen_error(failure, addr, &engine.rules()));
    }
    let bound = applied.started;
    print(
        &bound
            .iter()
            .map(|b| format!("source {} at {}\n", b.source, b.addr))
            .collect::<String>(),
    );
    let reloader =
        crate::reload::Reloader::new(config.dirs, engine.clone(), Some(transports), Some(users));
    reloader.spawn();
    let state = AppState {
        engine: engine.clone(),
        admin_token: admin_token(),
        reloader: Some(reloader),
        metrics,
        body_timeout: config.body_timeout,
        console: Arc::new(match config.store {
            StoreConfig::Embedded => crate::console::Settings::new(Some(config.data.clone())),
            StoreConfig::Nats(_) => {
                // Other nodes' events reach this node's live pages through the history.
                let mut s = crate::console::Settings::new(None);
                s.poll_history = Some(Duration::from_secs(2));
                s
            }
        }),
        guard: Arc::new(guard),
    };
    crate::server::listen::serve(
        listener,
        crate::server::app(state),
        tls.map(|t| t.config),
        config.limits,
        shutdown_signal(),
        Duration::from_secs(5),
    )
    .await
    .map_err(io("the HTTP listener failed"))?;
    stop_transports.cancel();
    tracing::info!("no longer accepting events; waiting for running actions");
    engine.shutdown(config.grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// The metrics recorder, drained every 5 s: histograms keep their samples until upkeep drains
/// them, so without it a service nobody scrapes grows by ~150 bytes per event
/// (benches/soak.sh).
fn metrics_with_upkeep() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    let metrics = crate::telemetry::install_metrics();
    if let Some(h) = metrics.clone() {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                h.run_upkeep();
            }
        });
    }
    metrics
}

/// A source that cannot listen, said once, with the HTTP listener named when it holds the
/// address (a stream source on `--listen`'s port).
fn listen_error(
    failure: crate::transport::ListenFailure,
    http: SocketAddr,
    set: &RuleSet,
) -> ServeError {
    let on_http = set
        .source(&failure.source_name)
        .and_then(|s| s.listening.as_ref())
        .is_some_and(|l| l.endpoints.iter().any(|e| e.clashes(&http_endpoint(http))));
    let hint = if on_http {
        format!(" (the HTTP listener is on {http}: --listen)")
    } else {
        String::new()
    };
    ServeError::Listen { failure, hint }
}

/// How long start-up waits for the rule archive's write before serving without it.
const ARCHIVE_WAIT: Duration = Duration::from_secs(2);

/// Archives the rule set (`engine::versions`) before the engine starts and the listeners
/// serve, then releases what it used: the rulebook texts, its buffers and the code it ran
/// (`trim`). Serving maps its own code and memory only afterwards, so start-up peaks at the
/// larger of the two instead of their sum (10,000 rules: ~3 MB lower). A store slower than
/// [`ARCHIVE_WAIT`] (a shared one) is not waited for: the write goes on beside serving, as
/// nothing needs it before a job looks for an older rule version. Once start-up is over, the
/// executable's pages it alone touched leave the resident set again.
async fn archive_then_trim(engine: &Arc<Engine>, snapshot: crate::rules::snapshot::Snapshot) {
    let mut archiving = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.archive_rules(snapshot, engine.rules()).await })
    };
    let archived = tokio::time::timeout(ARCHIVE_WAIT, &mut archiving)
        .await
        .is_ok();
    if archived {
        trim::release_startup_pages();
    }
    tokio::spawn(async move {
        if !archived {
            let _ = archiving.await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let released = tokio::task::spawn_blocking(trim::release_startup_pages)
            .await
            .unwrap_or(0);
        tracing::debug!(
            bytes = released,
            "start-up pages of the executable released"
        );
    });
}

/// The HTTP listener as an endpoint, to compare with the sources' (`check --listen` too).
pub fn http_endpoint(addr: SocketAddr) -> crate::sources::Endpoint {
    crate::sources::Endpoint {
        scheme: crate::sources::Scheme::Tcp,
        addr,
    }
}

/// This node's id among the nodes of a shared store: stable across restarts (the host name and
/// the data directory, which one node owns), so its broker sessions persist.
fn node_id(data: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let dir = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let digest = Sha256::new()
        .chain_update(host.trim().as_bytes())
        .chain_update([0])
        .chain_update(dir.as_os_str().as_encoded_bytes())
        .finalize();
    hex::encode(&digest[..4])
}

/// Logs what the load found (and warns when no rule came).
fn log_loaded(dirs: &Dirs, set: &RuleSet) {
    for w in &set.warnings {
        tracing::warn!("{w}");
    }
    let rulebooks: std::collections::HashSet<&str> = set
        .sources
        .iter()
        .map(|s| s.rulebook.as_str())
        .chain(set.rules.iter().map(|r| r.rulebook.as_str()))
        .collect();
    tracing::info!(
        dir = %dirs.rulebooks.display(),
        rulebooks = rulebooks.len(),
        rules = set.rules.len(),
        sources = set.sources.len(),
        "rulebooks loaded"
    );
    if set.rules.is_empty() {
        tracing::warn!(
            dir = %dirs.rulebooks.display(),
            "no rules loaded: events are stored but nothing runs (see docs/rulebooks.md)"
        );
    }
}

/// What serve prints for people and scripts: the listen address, the certificate's
/// fingerprint, and where each HTTP source is served (listening sources print once bound).
fn banner(
    set: &RuleSet,
    role: Role,
    addr: SocketAddr,
    tls: Option<&crate::server::listen::TlsReady>,
) -> String {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut banner = format!("listening on {scheme}://{addr}\n");
    if let Some(t) = tls {
        banner.push_str(&format!(
            "tls certificate sha256 fingerprint {}\n",
            t.fingerprint
        ));
    }
    for s in &set.sources {
        let kind = s.verifier.kind();
        match &s.path {
            Some(p) if !role.accepts_events() => banner.push_str(&format!(
                "source {} ({kind}) at {p} on the ingest nodes (not here: --role worker)\n",
                s.name,
            )),
            Some(p) => banner.push_str(&format!(
                "source {} ({kind}) at {scheme}://{addr}{p}\n",
                s.name,
            )),
            None if s.listening.is_some() => {}
            None => banner.push_str(&format!("source {} ({kind}) internal\n", s.name)),
        }
    }
    banner
}

/// Prints to stdout; a closed stdout must not stop the service.
fn print(text: &str) {
    use std::io::Write;
    if text.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Warns about `approval.approvers` that are not users, and copies the user changes `rulehook
/// users` notes in `users.json` into the audit trail, within about a second of each (the command
/// line writes the file; the service owns the trail). Returns the users file.
async fn watch_users(engine: &Arc<Engine>, data: &std::path::Path) -> crate::access::Users {
    let users = crate::access::Users::in_data(data);
    for w in crate::access::approver_warnings(&engine.rules(), &users) {
        tracing::warn!("{w}");
    }
    let state = engine.store().state.clone();
    // Changes made while the service was down are in the trail before it serves.
    if let Err(e) = crate::access::audit::copy_user_changes(state.as_ref(), &users).await {
        tracing::warn!("user changes could not be copied into the audit trail: {e}");
    }
    let watched = users.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut warned = false;
        loop {
            tick.tick().await;
            match crate::access::audit::copy_user_changes(state.as_ref(), &watched).await {
                Ok(_) => warned = false,
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!("user changes could not be copied into the audit trail: {e}");
                }
                Err(_) => {}
            }
        }
    });
    users
}

/// `RULEHOOK_ADMIN_TOKEN`, remembered as a secret to mask. Set but empty (an env file's
/// `RULEHOOK_ADMIN_TOKEN=` placeholder) it is no token at all: an empty token would let anyone
/// sign in to the console as admin with an empty field.
fn admin_token() -> Option<String> {
    let token = std::env::var("RULEHOOK_ADMIN_TOKEN").ok()?;
    if token.trim().is_empty() {
        tracing::warn!(
            "RULEHOOK_ADMIN_TOKEN is set but empty: ignored (only loopback clients are admin)"
        );
        return None;
    }
    if let Some(warning) = short_token_warning(&token) {
        tracing::warn!("{warning}");
    }
    crate::secrets::remember(&token);
    Some(token)
}

/// The fewest characters of `RULEHOOK_ADMIN_TOKEN` started without a warning: it is a password
/// anyone who reaches the admin API may guess at (`--failed-auth-per-second` slows that down,
/// it does not stop it).
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// What the log says at start-up about an admin token shorter than [`MIN_ADMIN_TOKEN_CHARS`].
fn short_token_warning(token: &str) -> Option<String> {
    let n = token.chars().count();
    (n < MIN_ADMIN_TOKEN_CHARS).then(|| {
        format!(
            "RULEHOOK_ADMIN_TOKEN is only {n} characters long: use at least {MIN_ADMIN_TOKEN_CHARS} random ones (`openssl rand -hex 32`), it is the admin password of the API and the console"
        )
    })
}

#[cfg(test)]
#[test]
fn a_short_admin_token_is_warned_about_at_start() {
    let warning = short_token_warning("break-glass").unwrap();
    assert!(
        warning.contains("only 11 characters") && warning.contains("at least 16"),
        "{warning}"
    );
    assert!(short_token_warning("0123456789abcdef").is_none());
    assert!(
        short_token_warning("ääääääää").is_some(),
        "characters, not bytes"
    );
}
