//! The command line: `serve`, `check`, `test` (`cli/test.rs`), `send`, `whatif`, `users`, and
//! the history commands (`cli/history.rs`). `anyhow` lives here, at the edge.

mod approve;
mod eda_condition;
mod history;
mod import;
mod test;
mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod whatif;
mod windows;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::rules::{Dirs, RuleSet};
use crate::server::listen::Tls;
use crate::service::{StoreConfig, StoreSpec};

#[derive(Debug, Parser)]
#[command(
    name = "rulehook",
    version,
    about = "Verified webhooks in, JSONPath rules, actions out"
)]
pub struct Cli {
    /// Log as JSON lines instead of readable text.
    #[arg(long, global = true, env = "RULEHOOK_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive webhooks and run the rules.
    Serve(Box<ServeArgs>),
    /// Validate rulebooks, scripts and templates; print file:line:col errors.
    Check(CheckArgs),
    /// Dry run: which rules an event would match, why not, and what would run.
    Test(TestArgs),
    /// Sign a JSON body exactly like a sender of KIND and POST it; print the status and body.
    Send(SendArgs),
    /// Replay stored events through candidate rulebooks without running anything; report
    /// per rule what would now match, no longer match, or run differently.
    Whatif(WhatifArgs),
    /// List a running service's events, newest first (admin API; see --url).
    Events(history::EventsArgs),
    /// One event's timeline: matches and why not, runs, outputs.
    Event(history::IdArgs),
    /// List jobs, e.g. `--status failed` for the dead letters.
    Jobs(history::JobsArgs),
    /// Send a stored event through the current rules again, as a new event.
    Replay(history::IdArgs),
    /// Queue a dead letter (a job that failed for good) again: the current version of its rule
    /// when the rule changed since the match (your fix), else (or with --as-matched) the version
    /// it matched, from the action that failed.
    Rerun(history::RerunArgs),
    /// Approve a job awaiting approval (its rule's `approval:`): it runs its actions.
    Approve(approve::DecideArgs),
    /// Reject a job awaiting approval: it is done without running anything (`rejected`).
    Reject(approve::DecideArgs),
    /// Translate another tool's rulebook: `import ansible-rulebook FILE --out DIR`.
    Import(import::ImportArgs),
    /// Manage the people who may use the admin API and console: `users add NAME --role R`.
    Users(users::UsersArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WhatifArgs {
    /// How far back to replay (e.g. 7d, 12h).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub since: Duration,
    /// The data directory of a stopped service, or a copy of it (read-only). A running `serve`
    /// holds its journal exclusively: read a running service with --url instead.
    #[arg(long, env = "RULEHOOK_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// Read the history of a running service through its admin API instead (its base URL;
    /// `RULEHOOK_ADMIN_TOKEN` is sent as the bearer token when set).
    #[arg(long, conflicts_with = "data", value_parser = parse_service_url)]
    pub url: Option<String>,
    /// With --url: accept any TLS certificate (a self-signed service).
    #[arg(long)]
    pub insecure: bool,
    /// Exit 1 when anything would change (for CI, before a rulebook change is merged).
    #[arg(long)]
    pub fail_on_change: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dirs: DirArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Where to POST (e.g. http://127.0.0.1:8080/hooks/ipfabric).
    pub url: String,
    /// Sender kind: ipfabric, netbox, standard-webhooks, infrahub, github, gitlab, basic
    /// (secret = user:password), bearer, hmac, none.
    #[arg(long)]
    pub kind: String,
    /// The shared secret (also read from RULEHOOK_SEND_SECRET); required except for `none`.
    #[arg(long, env = "RULEHOOK_SEND_SECRET")]
    pub secret: Option<String>,
    /// The body file; `-` or nothing reads standard input.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The body file, as a positional `-` for standard input.
    #[arg(value_name = "FILE|-")]
    pub positional: Option<PathBuf>,
    /// An extra request header, `Name: value` (repeatable); it replaces a header of the same
    /// name that signing adds (e.g. `--header 'X-GitHub-Event: push'`).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The body's Content-Type.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
    /// For `--kind hmac`: the signature header (`--header NAME` without a value also sets it).
    #[arg(long, default_value = "x-signature")]
    pub signature_header: String,
    /// For `--kind hmac`: sha1, sha256 or sha512.
    #[arg(long, default_value = "sha256")]
    pub algorithm: String,
    /// For `--kind hmac`: hex or base64.
    #[arg(long, default_value = "hex")]
    pub encoding: String,
    /// For `--kind hmac`: text before the signature (e.g. `sha256=`).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Accept any TLS certificate (a self-signed test receiver).
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// The rulebooks: every *.yml / *.yaml file in this directory (see docs/rulebooks.md).
    #[arg(long, env = "RULEHOOK_RULEBOOKS", default_value = "./rulebooks")]
    pub rulebooks: PathBuf,
    /// Where `run_script` finds its scripts (a script outside it is refused).
    #[arg(long, env = "RULEHOOK_SCRIPTS", default_value = "./scripts")]
    pub scripts: PathBuf,
    /// Where `body_template` and `{% include %}` find template files.
    #[arg(long, env = "RULEHOOK_TEMPLATES", default_value = "./templates")]
    pub templates: PathBuf,
    /// The `ansible-playbook` that `run_playbook` runs (default: the first on PATH).
    #[arg(long, env = "RULEHOOK_ANSIBLE_PLAYBOOK")]
    pub ansible_playbook: Option<PathBuf>,
}

/// `check`'s arguments: the directories, and where `serve` will listen for HTTP.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub dirs: DirArgs,
    /// The address `serve` will serve HTTP on (as its --listen; RULEHOOK_LISTEN): a syslog
    /// source listening there over TCP is an error. Unchecked when not given.
    #[arg(long, env = "RULEHOOK_LISTEN")]
    pub listen: Option<SocketAddr>,
}

impl DirArgs {
    fn dirs(&self) -> Dirs {
        if let Some(p) = &self.ansible_playbook {
            crate::actions::ansible::set_binary(p.clone());
        }
        Dirs {
            rulebooks: self.rulebooks.clone(),
            scripts: self.scripts.clone(),
            templates: self.templates.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub dirs: DirArgs,
    /// Where the embedded store keeps events, jobs and the history (one process at a time).
    #[arg(long, env = "RULEHOOK_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// Where events, jobs and the history are kept: `embedded` (SQLite in --data, one node) or
    /// `nats://HOST:PORT[,nats://…]` (NATS JetStream, shared by every node of a deployment).
    #[arg(long, env = "RULEHOOK_STORE", default_value = "embedded", value_parser = StoreSpec::parse)]
    pub store: StoreSpec,
    /// On NATS: the start of every stream, consumer and subject name (one per deployment).
    #[arg(long, env = "RULEHOOK_STORE_PREFIX", default_value = "rulehook")]
    pub store_prefix: String,
    /// On NATS: stream replicas (3 on a three-server cluster).
    #[arg(long, env = "RULEHOOK_STORE_REPLICAS", default_value_t = 1)]
    pub store_replicas: usize,
    /// On NATS: the user name to connect as (with --store-password).
    #[arg(long, env = "RULEHOOK_STORE_USER", requires = "store_password")]
    pub store_user: Option<String>,
    /// On NATS: the password of --store-user (best from the environment).
    #[arg(
        long,
        env = "RULEHOOK_STORE_PASSWORD",
        requires = "store_user",
        hide_env_values = true
    )]
    pub store_password: Option<String>,
    /// On NATS: an authentication token (instead of a user and password).
    #[arg(
        long,
        env = "RULEHOOK_STORE_TOKEN",
        conflicts_with = "store_user",
        hide_env_values = true
    )]
    pub store_token: Option<String>,
    /// On NATS: a CA certificate (PEM) to verify the servers with; TLS is then required.
    #[arg(long, env = "RULEHOOK_STORE_TLS_CA")]
    pub store_tls_ca: Option<PathBuf>,
    /// On NATS: a client certificate (PEM) for servers that verify clients; with --store-tls-key.
    #[arg(long, env = "RULEHOOK_STORE_TLS_CERT", requires = "store_tls_key")]
    pub store_tls_cert: Option<PathBuf>,
    /// On NATS: the key (PEM) of --store-tls-cert.
    #[arg(long, env = "RULEHOOK_STORE_TLS_KEY", requires = "store_tls_cert")]
    pub store_tls_key: Option<PathBuf>,
    /// On NATS: how long jobs leased by a node that stopped answering wait before another
    /// worker takes them.
    #[arg(long, env = "RULEHOOK_LEASE_CHECK", default_value = "10s", value_parser = parse_duration)]
    pub lease_check: Duration,
    /// What this node does: `all`, `ingest` (accepts webhooks, runs no jobs) or `worker` (runs
    /// jobs, accepts no webhooks). Roles other than `all` need a shared store (--store nats://…).
    #[arg(long, env = "RULEHOOK_ROLE", value_enum, default_value_t = crate::engine::Role::All)]
    pub role: crate::engine::Role,
    /// The address to serve HTTP(S) on; port 0 picks a free one (the printed line says which).
    #[arg(long, env = "RULEHOOK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Workers: how many jobs (matched rules) run at once, which also bounds the scripts and
    /// outbound requests running at once.
    #[arg(long, env = "RULEHOOK_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// The console's address as people reach it (`https://rulehook.example.net`): the base of
    /// `approval.url` in approval notifications (unset: the path alone).
    #[arg(long, env = "RULEHOOK_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// The longest a job awaiting approval waits before it looks for a decision again (it also
    /// looks at its deadline).
    #[arg(long, env = "RULEHOOK_APPROVAL_CHECK", default_value = "2s", value_parser = parse_duration)]
    pub approval_check: Duration,
    /// Finished events, their jobs and attempts are pruned once both the event and its jobs'
    /// last activity (a run, a retry, a re-run, an approval or rejection) are older than this;
    /// pending jobs and dead letters are kept.
    #[arg(long, env = "RULEHOOK_RETAIN", default_value = "30d", value_parser = parse_duration)]
    pub retain: Duration,
    /// How long running actions may take to finish on SIGTERM before the service exits.
    #[arg(long, env = "RULEHOOK_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// TLS certificate (PEM); with --tls-key.
    #[arg(
        long,
        env = "RULEHOOK_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, env = "RULEHOOK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate generated at start; its SHA-256 fingerprint is printed.
    #[arg(long, env = "RULEHOOK_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// Most connections open at once; more are closed on arrival.
    #[arg(long, env = "RULEHOOK_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// How long a client may take to send a request body.
    #[arg(long, env = "RULEHOOK_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    #[command(flatten)]
    pub guard: GuardArgs,
}

/// `serve` settings that protect the service from its clients, and who is let in.
#[derive(Debug, Clone, Args)]
pub struct GuardArgs {
    /// Require the admin token from loopback clients too (set it behind a local reverse proxy:
    /// there every client is loopback).
    #[arg(long, env = "RULEHOOK_ADMIN_REQUIRE_TOKEN")]
    pub admin_require_token: bool,
    /// A host name the admin API and the console answer to, besides localhost, loopback
    /// addresses and the listen address (repeat it, or separate names by commas); other
    /// `Host` headers get 421 (DNS rebinding). Source paths answer any host.
    #[arg(long = "admin-host", env = "RULEHOOK_ADMIN_HOST", value_name = "NAME", value_delimiter = ',', value_parser = crate::server::admin_plane::parse_admin_host)]
    pub admin_hosts: Vec<String>,
    /// Pending jobs past which new events are answered 503 with Retry-After (0: no bound).
    #[arg(long, env = "RULEHOOK_MAX_PENDING", default_value_t = crate::server::guard::DEFAULT_MAX_PENDING)]
    pub max_pending: usize,
    /// Failed verifications per second one client address may make (burst 50) before further
    /// failures are answered 429 instead of 401 (0: no limit); verified requests always pass.
    /// Console sign-ins and wrong admin API tokens have a budget each of their own at the same
    /// rate; past it, their tries are refused unchecked.
    #[arg(long, env = "RULEHOOK_FAILED_AUTH_PER_SECOND", default_value_t = 10.0)]
    pub failed_auth_per_second: f64,
    /// How long a client may take to send a request's headers.
    #[arg(long, env = "RULEHOOK_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// How long a kept-alive connection may stay idle between requests.
    #[arg(long, env = "RULEHOOK_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Most connections one client address may hold open (0: an eighth of --max-connections).
    #[arg(long, env = "RULEHOOK_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 0)]
    pub max_connections_per_client: usize,
    /// Single sign-on: the header in which a reverse proxy names the person it authenticated
    /// (e.g. X-Forwarded-User). Believed only from --trusted-proxy addresses.
    #[arg(long, env = "RULEHOOK_TRUST_USER_HEADER", value_name = "HEADER")]
    pub trust_user_header: Option<String>,
    /// An address or CIDR of the reverse proxy whose user header is believed (repeat it, or
    /// separate by commas).
    #[arg(long = "trusted-proxy", env = "RULEHOOK_TRUSTED_PROXY", value_name = "CIDR", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header in which the proxy lists the person's groups, comma-separated (e.g.
    /// X-Forwarded-Groups); mapped to roles by --trust-group-role.
    #[arg(long, env = "RULEHOOK_TRUST_GROUPS_HEADER", value_name = "HEADER")]
    pub trust_groups_header: Option<String>,
    /// GROUP=ROLE: people in that group get that role (the highest wins); repeat it.
    #[arg(long = "trust-group-role", env = "RULEHOOK_TRUST_GROUP_ROLE", value_name = "GROUP=ROLE", value_delimiter = ';', value_parser = crate::access::sso::parse_group_role)]
    pub trust_group_roles: Vec<(String, crate::access::Role)>,
    /// The role of a person the proxy names who is neither in users.json nor in a mapped group
    /// (unset: refused with 403).
    #[arg(long, env = "RULEHOOK_TRUST_DEFAULT_ROLE", value_name = "ROLE", value_parser = |s: &str| crate::access::Role::parse(s).ok_or_else(|| format!("use one of {}", crate::access::Role::ALL.join(", "))))]
    pub trust_default_role: Option<crate::access::Role>,
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.trim()
        .parse::<ipnet::IpNet>()
        .or_else(|_| s.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or CIDR"))
}

impl GuardArgs {
    /// `data`: the service's data directory, whose `users.json` may let people in.
    fn guard(&self, data: &std::path::Path) -> anyhow::Result<crate::server::guard::Guard> {
        let token = std::env::var("RULEHOOK_ADMIN_TOKEN").ok();
        // With a token required, someone must be able to present one: the admin token, a
        // user's (users.json), or a proxy's header naming a person.
        let users = || {
            crate::access::Users::in_data(data)
                .list()
                .is_ok_and(|u| !u.is_empty())
        };
        if self.admin_require_token
            && token.as_deref().is_none_or(|t| t.trim().is_empty())
            && self.trust_user_header.is_none()
            && !users()
        {
            anyhow::bail!(
                "--admin-require-token needs a way in: set RULEHOOK_ADMIN_TOKEN, add a user (`rulehook users add NAME --role admin --data {}`) or sign people in through a proxy (--trust-user-header); with none of them nobody could use the admin API",
                data.display()
            );
        }
        Ok(crate::server::guard::Guard {
            admin_loopback: !self.admin_require_token,
            admin_hosts: Default::default(),
            max_pending: self.max_pending,
            failures: crate::server::guard::FailureLimit::new(self.failed_auth_per_second, 50),
            login_failures: crate::server::guard::FailureLimit::new(
                self.failed_auth_per_second,
                50,
            ),
            token_failures: crate::server::guard::FailureLimit::new(
                self.failed_auth_per_second,
                50,
            ),
            health: Default::default(),
            live: crate::server::guard::LiveLimit::for_connections(1024, 0),
            users: None,
            sso: self.sso()?,
        })
    }

    /// The trusted-header sign-in, when `--trust-user-header` is given.
    fn sso(&self) -> anyhow::Result<Option<crate::access::sso::TrustedHeader>> {
        let header = |flag: &str, v: &str| {
            axum::http::HeaderName::try_from(v.trim())
                .map_err(|e| anyhow::anyhow!("{flag} `{v}` is not a header name: {e}"))
        };
        let Some(user) = &self.trust_user_header else {
            if !self.trusted_proxies.is_empty() || self.trust_groups_header.is_some() {
                anyhow::bail!(
                    "--trusted-proxy and --trust-groups-header need --trust-user-header (the header naming the person)"
                );
            }
            return Ok(None);
        };
        if self.trusted_proxies.is_empty() {
            anyhow::bail!(
                "--trust-user-header needs --trusted-proxy: the header is believed only from the proxy's addresses"
            );
        }
        let local = self.trusted_proxies.iter().any(|n| match n {
            ipnet::IpNet::V4(v4) => v4.contains(&std::net::Ipv4Addr::LOCALHOST),
            ipnet::IpNet::V6(v6) => v6.contains(&std::net::Ipv6Addr::LOCALHOST),
        });
        if local && !self.admin_require_token {
            anyhow::bail!(
                "a --trusted-proxy on this host needs --admin-require-token: without it every request the proxy passes without the user header would be an admin's"
            );
        }
        let groups = match &self.trust_groups_header {
            Some(g) => Some(header("--trust-groups-header", g)?),
            None => None,
        };
        Ok(Some(crate::access::sso::TrustedHeader::new(
            header("--trust-user-header", user)?,
            self.trusted_proxies.clone(),
            groups,
            self.trust_group_roles.clone(),
            self.trust_default_role,
        )))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s)
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// The event body to test (`-` reads standard input); decoded as the source's `format`
    /// says (JSON without --source; a `--header 'Content-Type: …'` guides `auto`). For a syslog
    /// source, text that is not JSON is syslog messages as sent, one per line. A file with
    /// several JSON values (one after the other, e.g. one per line), or a folder of `.json`
    /// files (in name order), is a sequence: each event is shown with what every correlation
    /// rule holds and waits for.
    #[arg(long)]
    pub event: PathBuf,
    /// In a sequence, the time between two events (correlation windows are measured in it).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub every: Duration,
    /// The source it arrives on; without it every rule is considered.
    #[arg(long)]
    pub source: Option<String>,
    /// A request header, `Name: value` (repeatable), visible to templates as meta.headers.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// The address the event comes from (`meta("peer")`, `meta.peer`), as a listener records it.
    #[arg(long)]
    pub peer: Option<String>,
    /// The MQTT topic it was published on (`meta("topic")`).
    #[arg(long)]
    pub topic: Option<String>,
    /// The NATS subject it was published on (`meta("subject")`).
    #[arg(long)]
    pub subject: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// When the event arrives (RFC 3339, e.g. 2026-12-24T12:00:00Z; default now): which
    /// maintenance windows would hold, skip or ask approval for the jobs it makes.
    #[arg(long, value_parser = windows::parse_at)]
    pub at: Option<i64>,
    #[command(flatten)]
    pub dirs: DirArgs,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init(cli.log_json);
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_broken_pipe();
    }
    match cli.command {
        Command::Check(c) => check(&c),
        Command::Test(t) => match test::test(&t) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Send(a) => run_async(send(a)),
        Command::Whatif(w) => whatif::main(&w),
        Command::Events(a) => run_async(history::events(a)),
        Command::Event(a) => run_async(history::event(a)),
        Command::Jobs(a) => run_async(history::jobs(a)),
        Command::Replay(a) => run_async(history::replay(a)),
        Command::Rerun(a) => run_async(history::rerun(a)),
        Command::Approve(a) => run_async(approve::decide(a, true)),
        Command::Reject(a) => run_async(approve::decide(a, false)),
        Command::Import(a) => import::run(&a),
        Command::Users(a) => users::run(a),
        Command::Serve(s) => run_async(serve(*s)),
    }
}

/// A command whose output goes to a pipe that closes early (`rulehook events | head -1`) ends
/// quietly, as other command-line tools do, instead of panicking in `println!`. Not for `serve`,
/// whose writes to a script's closed stdin must stay errors, not kill the service.
fn quiet_broken_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called once at start, before any other thread exists; restores the default action.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        tracing::debug!("SIGPIPE left ignored: {e}");
    }
}

fn run_async(f: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(d: &DirArgs) -> Result<RuleSet, ExitCode> {
    crate::rules::load(&d.dirs()).map_err(|errs| {
        for e in &errs.0 {
            eprintln!("{e}");
        }
        eprintln!("{} error(s); nothing loaded", errs.0.len());
        ExitCode::from(2)
    })
}

/// The sources that listen over TCP where the HTTP listener will be, as `check` reports them.
fn on_http_listener(set: &RuleSet, http: SocketAddr) -> Vec<String> {
    let http = crate::service::http_endpoint(http);
    set.sources
        .iter()
        .flat_map(|s| {
            let endpoints = s.listening.iter().flat_map(|l| l.endpoints.iter());
            endpoints
                .filter(|e| e.clashes(&http))
                .map(|e| {
                    format!(
                        "{}: source `{}` listens on {}://{}, where serve's HTTP listener will be (--listen {})",
                        s.rulebook,
                        s.name,
                        e.scheme.as_str(),
                        e.addr,
                        http.addr
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn check(c: &CheckArgs) -> ExitCode {
    let d = &c.dirs;
    match load(d) {
        Ok(set) => {
            let clashes = c
                .listen
                .map(|http| on_http_listener(&set, http))
                .unwrap_or_default();
            if !clashes.is_empty() {
                for line in &clashes {
                    eprintln!("{line}");
                }
                eprintln!("{} error(s); nothing loaded", clashes.len());
                return ExitCode::from(2);
            }
            for w in &set.warnings {
                eprintln!("warning: {w}");
            }
            if set.rules.is_empty() && set.sources.is_empty() {
                let any_file = std::fs::read_dir(&d.rulebooks).is_ok_and(|dir| {
                    dir.flatten().any(|e| {
                        let p = e.path();
                        p.is_file()
                            && matches!(
                                p.extension().and_then(|x| x.to_str()),
                                Some("yml" | "yaml")
                            )
                    })
                });
                if any_file {
                    eprintln!(
                        "warning: the rulebooks in {} declare no source and no rule",
                        d.rulebooks.display()
                    );
                } else {
                    eprintln!(
                        "warning: {} holds no rulebook (*.yml, *.yaml)",
                        d.rulebooks.display()
                    );
                }
            }
            let windows = match set.windows.0.len() {
                0 => String::new(),
                n => format!(", {n} maintenance window(s)"),
            };
            println!(
                "ok: {} source(s), {} rule(s){windows} in {}",
                set.sources.len(),
                set.rules.len(),
                d.rulebooks.display()
            );
            for line in windows::check_lines(&set, crate::domain::now_ms()) {
                println!("  {line}");
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `serve`: the flags turned into a typed [`crate::service::Config`], then served.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let guard = args.guard.guard(&args.data)?;
    let tls = match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
        (Some(cert), Some(key), _) => Tls::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, true) => Tls::SelfSigned { names: Vec::new() },
        _ => Tls::Off,
    };
    let config = crate::service::Config {
        dirs: args.dirs.dirs(),
        data: args.data.clone(),
        store: store_config(&args),
        role: args.role,
        listen: args.listen,
        tls,
        limits: crate::server::listen::Limits {
            max_connections: args.max_connections,
            per_client: args.guard.max_connections_per_client,
            header_timeout: args.guard.header_timeout,
            idle_timeout: args.guard.idle_timeout,
        },
        guard,
        admin_hosts: args.guard.admin_hosts.clone(),
        concurrency: args.concurrency,
        retain: args.retain,
        grace: args.grace,
        public_url: args.public_url.clone(),
        approval_check: args.approval_check,
        body_timeout: args.body_timeout,
    };
    Ok(crate::service::run(config).await?)
}

/// The store `--store` names, with the `--store-…` options that go with it.
fn store_config(args: &ServeArgs) -> StoreConfig {
    let url = match &args.store {
        StoreSpec::Embedded => return StoreConfig::Embedded,
        StoreSpec::Nats(url) => url,
    };
    let mut config = crate::store::nats::NatsConfig::new(url, &args.store_prefix);
    config.ack_wait = args.lease_check;
    config.replicas = args.store_replicas.max(1);
    use crate::store::nats::NatsAuth;
    config.auth = match (&args.store_user, &args.store_password, &args.store_token) {
        (Some(u), Some(p), _) => {
            crate::secrets::remember(p);
            NatsAuth::UserPassword(u.clone(), p.clone())
        }
        (_, _, Some(t)) => {
            crate::secrets::remember(t);
            NatsAuth::Token(t.clone())
        }
        _ => NatsAuth::None,
    };
    config.tls.ca = args.store_tls_ca.clone();
    config.tls.cert_key = args.store_tls_cert.clone().zip(args.store_tls_key.clone());
    StoreConfig::Nats(Box::new(config))
}

/// A body from a file, or from standard input for `-` or no file.
fn read_body(path: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        }
        _ => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("cannot read standard input")?;
            Ok(b)
        }
    }
}

async fn send(a: SendArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let absolute = reqwest::Url::parse(&a.url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    if !absolute {
        anyhow::bail!(
            "`{}` is not an http:// or https:// URL: give the source's whole URL, e.g. http://127.0.0.1:8080/hooks/NAME (`serve` prints each)",
            a.url
        );
    }
    let path = a.file.clone().or(a.positional.clone());
    let body = read_body(path.as_deref())?;
    let now = std::time::SystemTime::now();
    use crate::verify::webhook::WebhookKind;
    let kind = WebhookKind::parse(&a.kind)
        .filter(|k| *k != WebhookKind::Internal)
        .with_context(|| {
            let kinds: Vec<&str> = crate::verify::KINDS
                .iter()
                .filter(|k| **k != "internal")
                .copied()
                .collect();
            let meant = crate::text::closest(&a.kind, &kinds)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            format!(
                "unknown kind `{}`{meant} (expected one of: {})",
                a.kind,
                kinds.join(", ")
            )
        })?;
    let secret = match (&a.secret, a.kind.as_str()) {
        (_, "none") => String::new(),
        (Some(s), "basic") if !s.contains(':') => anyhow::bail!(
            "for kind `basic`, --secret is `user:password` (the source's `username` and `password` joined by a colon)"
        ),
        (Some(s), _) if !s.is_empty() => s.clone(),
        _ => anyhow::bail!(
            "--secret is required for kind `{}` (or set RULEHOOK_SEND_SECRET)",
            a.kind
        ),
    };
    let mut extra = Vec::new();
    let mut signature_header = a.signature_header.clone();
    for h in &a.headers {
        match h.split_once(':') {
            Some((n, v)) => extra.push((n.trim().to_ascii_lowercase(), v.trim().to_string())),
            // `--kind hmac --header X-Sig`: the signature header (the older spelling).
            None if a.kind == "hmac" => signature_header = h.trim().to_string(),
            None => anyhow::bail!("header `{h}` must be `Name: value`"),
        }
    }
    let mut headers = if a.kind == "hmac" {
        let algorithm = crate::verify::Algorithm::parse(&a.algorithm)
            .with_context(|| format!("algorithm `{}`: use sha1, sha256 or sha512", a.algorithm))?;
        let encoding = crate::verify::Encoding::parse(&a.encoding)
            .with_context(|| format!("encoding `{}`: use hex or base64", a.encoding))?;
        crate::verify::generic_hmac::GenericHmac {
            header: signature_header.to_ascii_lowercase(),
            algorithm,
            encoding,
            prefix: a.prefix.clone(),
            id_header: None,
            secrets: Vec::new(),
        }
        .sign(&secret, &body)
    } else {
        kind.sign(&secret, &body, now).with_context(|| {
            format!(
                "the secret is not a valid `{}` key: expected `whsec_` followed by base64",
                a.kind
            )
        })?
    };
    headers.retain(|(n, _)| !extra.iter().any(|(e, _)| e == n));
    headers.extend(extra);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(a.insecure)
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("rulehook/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut req = client.post(&a.url).body(body);
    if !headers.iter().any(|(n, _)| n == "content-type") {
        req = req.header("content-type", a.content_type.as_str());
    }
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let cause = crate::actions::http::error_chain(&e);
            let hint = if !a.insecure && is_certificate_error(&cause) {
                "\nhint: the receiver's certificate is not trusted (self-signed?); add --insecure to accept it"
            } else {
                ""
            };
            anyhow::bail!("cannot POST to {}: {cause}{hint}", a.url);
        }
    };
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    println!("{}", status.as_u16());
    println!("{text}");
    if !status.is_success() {
        anyhow::bail!("the receiver answered {status}");
    }
    Ok(())
}

fn is_certificate_error(cause: &str) -> bool {
    let c = cause.to_ascii_lowercase();
    c.contains("certificate") || c.contains("unknownissuer") || c.contains("invalid peer")
}

/// `--url` of the commands that talk to a running service: its base URL, with the scheme (a
/// bare `127.0.0.1:8080` would fail later as "cannot reach the service", which it is not).
pub(crate) fn parse_service_url(s: &str) -> Result<String, String> {
    let absolute = reqwest::Url::parse(s.trim())
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    if absolute {
        Ok(s.trim().to_string())
    } else {
        Err(format!(
            "`{s}` is not an http:// or https:// URL: give the service's address, e.g. http://127.0.0.1:8080"
        ))
    }
}

/// `--public-url`: an absolute `http` or `https` URL with a host (it becomes links in
/// notifications: a bare host name or a `javascript:` URL would be a broken or harmful link).
fn parse_public_url(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "`{s}` is not an absolute http(s) URL; give the console's address as people reach it, like https://rulehook.example.net"
        )
    };
    let url = reqwest::Url::parse(s.trim()).map_err(|_| bad())?;
    let web =
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty());
    if !web || url.query().is_some() || url.fragment().is_some() {
        return Err(bad());
    }
    Ok(s.trim().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_public_url_is_an_absolute_http_url() {
        for bad in [
            "rulehook.example.net",
            "javascript:alert(1)",
            "ftp://rulehook.example.net",
            "https://",
            "https://h.example/?a=1",
        ] {
            let err = super::parse_public_url(bad).unwrap_err();
            assert!(err.contains("absolute http(s) URL"), "{bad}: {err}");
        }
        assert_eq!(
            super::parse_public_url("https://rulehook.example.net/").unwrap(),
            "https://rulehook.example.net"
        );
        assert!(super::parse_public_url("http://127.0.0.1:18080/rh").is_ok());
    }
}
