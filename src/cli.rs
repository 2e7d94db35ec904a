//! The command line: `serve`, `check`, `test`, `send` (spec §1), and the history commands
//! (`cli/history.rs`). `anyhow` lives here, at the edge.

mod approve;
mod eda_condition;
mod history;
mod import;
mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

mod whatif;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::rules::{Dirs, RuleSet};
use crate::server::listen::Tls;
use crate::server::{AppState, app};
use crate::store::Store;

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
    Check(DirArgs),
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
    /// The data directory of the service (read-only; `serve` may be running on it).
    #[arg(long, env = "RULEHOOK_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// Read the history of a running service through its admin API instead (its base URL;
    /// `RULEHOOK_ADMIN_TOKEN` is sent as the bearer token when set).
    #[arg(long, conflicts_with = "data")]
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
    #[arg(long, env = "RULEHOOK_STORE", default_value = "embedded")]
    pub store: String,
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
    #[arg(long, env = "RULEHOOK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The longest a job awaiting approval waits before it looks for a decision again (it also
    /// looks at its deadline).
    #[arg(long, env = "RULEHOOK_APPROVAL_CHECK", default_value = "2s", value_parser = parse_duration)]
    pub approval_check: Duration,
    /// Finished events, their jobs and attempts older than this are pruned (pending jobs and
    /// dead letters are kept until they finish or are re-run).
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

/// `serve` settings that protect the service from its clients (issue 10).
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
}

impl GuardArgs {
    fn guard(&self) -> anyhow::Result<crate::server::guard::Guard> {
        let token = std::env::var("RULEHOOK_ADMIN_TOKEN").ok();
        if self.admin_require_token && token.as_deref().is_none_or(str::is_empty) {
            anyhow::bail!(
                "--admin-require-token needs RULEHOOK_ADMIN_TOKEN: without it nobody could use the admin API"
            );
        }
        Ok(crate::server::guard::Guard {
            admin_loopback: !self.admin_require_token,
            admin_hosts: Default::default(),
            max_pending: self.max_pending,
            failures: crate::server::guard::FailureLimit::new(self.failed_auth_per_second, 50),
            health: Default::default(),
            live: crate::server::guard::LiveLimit::for_connections(1024, 0),
            users: None,
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s)
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// The event body to test (`-` reads standard input); decoded as the source's `format`
    /// says (JSON without --source; a `--header 'Content-Type: …'` guides `auto`). A file with
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
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dirs: DirArgs,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init(cli.log_json);
    match cli.command {
        Command::Check(d) => check(&d),
        Command::Test(t) => match test(&t) {
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

fn check(d: &DirArgs) -> ExitCode {
    match load(d) {
        Ok(set) => {
            for w in &set.warnings {
                eprintln!("warning: {w}");
            }
            if set.rules.is_empty() && set.sources.is_empty() {
                eprintln!(
                    "warning: {} holds no rulebook (*.yml, *.yaml)",
                    d.rulebooks.display()
                );
            }
            println!(
                "ok: {} source(s), {} rule(s) in {}",
                set.sources.len(),
                set.rules.len(),
                d.rulebooks.display()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn test(t: &TestArgs) -> anyhow::Result<ExitCode> {
    let set = match load(&t.dirs) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if t.event.as_os_str() != "-" {
        let several = if t.event.is_dir() {
            Some(read_events(&t.event)?)
        } else {
            read_events(&t.event).ok().filter(|b| b.len() > 1)
        };
        if let Some(bodies) = several {
            if let Some(s) = &t.source
                && set.source(s).is_none()
            {
                anyhow::bail!("no source named `{s}` in {}", t.dirs.rulebooks.display());
            }
            return sequence(t, &set, bodies);
        }
    }
    let raw = read_body(Some(&t.event))?;
    let format = match &t.source {
        Some(s) => match set.source(s) {
            Some(src) => src.format,
            None => anyhow::bail!("no source named `{s}` in {}", t.dirs.rulebooks.display()),
        },
        None => crate::body::BodyFormat::Json,
    };
    let mut headers = serde_json::Map::new();
    for h in &t.headers {
        let (n, v) = h
            .split_once(':')
            .with_context(|| format!("header `{h}` must be `Name: value`"))?;
        headers.insert(
            n.trim().to_ascii_lowercase(),
            Value::String(v.trim().to_string()),
        );
    }
    let content_type = headers.get("content-type").and_then(Value::as_str);
    let (body, _) = format
        .decode(content_type, &raw)
        .with_context(|| format!("{} (format {})", t.event.display(), format.name()))?;
    let report = serde_json::to_value(crate::rules::dry_run(
        &set,
        t.source.as_deref(),
        &body,
        &headers,
    ))?;
    let report = report.as_array().cloned().unwrap_or_default();
    if t.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mut others = Vec::new();
        for r in &report {
            let name = format!(
                "{}/{}",
                r["rulebook"].as_str().unwrap_or(""),
                r["rule"].as_str().unwrap_or("")
            );
            if r["other_source"] == true {
                others.push(name);
                continue;
            }
            if r["matched"] == true {
                println!("MATCH    {name}");
                if let Some(t) = r["throttle"].as_object() {
                    println!(
                        "         throttle: once within {} per group {} (a repeat in the window runs nothing)",
                        t["once_within"].as_str().unwrap_or(""),
                        t["group"].as_str().unwrap_or("")
                    );
                }
                for a in r["actions"].as_array().into_iter().flatten() {
                    println!("         would run: {}", readable(a));
                }
                for a in r["on_failure"].as_array().into_iter().flatten() {
                    println!("         on failure: {}", readable(a));
                }
            } else {
                println!("no match {name}");
                for w in r["why_not"].as_array().into_iter().flatten() {
                    println!("         {}", w.as_str().unwrap_or(""));
                }
            }
        }
        if let Some(line) = crate::rules::other_sources_line(&others) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The events of `--event`: one file with one or more JSON values, or a folder of `.json`
/// files. Each with where it came from (`file` or `file#n`).
fn read_events(path: &std::path::Path) -> anyhow::Result<Vec<(String, Value)>> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let values: Vec<Value> = serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is not valid JSON", f.display()))?;
        let several = values.len() > 1;
        for (i, v) in values.into_iter().enumerate() {
            let name = if several {
                format!("{}#{}", f.display(), i + 1)
            } else {
                f.display().to_string()
            };
            out.push((name, v));
        }
    }
    Ok(out)
}

/// The actions a correlation that fired would run, rendered with `events` and `correlation`
/// as a job sees them.
fn would_run(
    set: &RuleSet,
    rule: usize,
    took_part: &[crate::domain::Participant],
    deadline: Option<i64>,
    bodies: &std::collections::HashMap<String, Value>,
    event: &Value,
    id: &str,
) -> Vec<String> {
    let r = &set.rules[rule];
    let (evs, correlation) = match &r.correlate {
        Some(c) => {
            let with_bodies: Vec<_> = took_part
                .iter()
                .map(|p| (p, bodies.get(&p.id).cloned().unwrap_or(Value::Null)))
                .collect();
            c.template_context(&c.group(event), &with_bodies, deadline)
        }
        None => (Value::Null, Value::Null),
    };
    let ctx = crate::templates::context(json!({
        "event": event, "events": evs, "correlation": correlation,
        "meta": {"id": id, "rulebook": r.rulebook, "rule": r.name},
    }));
    r.actions
        .iter()
        .map(|a| {
            let shown = match a.render(&set.templates, &ctx) {
                Ok(x) => x.for_history(),
                Err(e) => json!({"render_error": e}),
            };
            format!("         would run: {shown}")
        })
        .collect()
}

/// `rulehook test` on a sequence: event by event, what each rule does, and for correlation
/// rules what they hold and wait for (windows measured with `--every` between events).
fn sequence(t: &TestArgs, set: &RuleSet, events: Vec<(String, Value)>) -> anyhow::Result<ExitCode> {
    use crate::domain::CorrelationState;
    use crate::whatif::{Simulator, Would};
    let mut sim = Simulator::new(set);
    let mut bodies: std::collections::HashMap<String, Value> = Default::default();
    let step = t.every.as_millis() as i64;
    let mut report = Vec::new();
    // Absence windows still open: (deadline, rule, event id, missing name).
    let mut open: Vec<(i64, usize, String, String)> = Vec::new();
    let mut lines = Vec::new();
    for (n, (name, body)) in events.iter().enumerate() {
        let at = n as i64 * step;
        let id = format!("e{}", n + 1);
        bodies.insert(id.clone(), body.clone());
        // Absences whose window ended before this event fire first.
        let (due, rest): (Vec<_>, Vec<_>) = open.into_iter().partition(|(d, ..)| *d < at);
        open = rest;
        for (deadline, rule, opened, missing) in due {
            let r = &set.rules[rule];
            lines.push(format!(
                "FIRE     {}/{}: the window opened by {opened} ended at +{} without `{missing}`",
                r.rulebook,
                r.name,
                crate::domain::human_duration(deadline)
            ));
            let first = crate::domain::Participant {
                name: r
                    .correlate
                    .as_ref()
                    .map(|c| c.steps[0].name.clone())
                    .unwrap_or_default(),
                id: opened.clone(),
                at: 0,
            };
            let opened_body = bodies.get(&opened).cloned().unwrap_or(Value::Null);
            lines.extend(would_run(
                set,
                rule,
                &[first],
                Some(deadline),
                &bodies,
                &opened_body,
                &opened,
            ));
            report.push(json!({"at_ms": deadline, "rule": r.name, "fired": true, "absence_of": missing, "events": [opened]}));
        }
        lines.push(format!(
            "event {id} at +{} ({name})",
            crate::domain::human_duration(at)
        ));
        let doc = crate::rules::EventDoc::new(body.clone());
        let decisions = sim.feed(t.source.as_deref(), &id, &doc, at);
        let mut items = Vec::new();
        for d in &decisions {
            let r = &set.rules[d.rule];
            let rname = format!("{}/{}", r.rulebook, r.name);
            let mut item = json!({"rule": r.name, "rulebook": r.rulebook});
            match (&d.would, &d.observed) {
                (Would::Throttled, _) => {
                    lines.push(format!("THROTTLED {rname}"));
                    item["throttled"] = json!(true);
                }
                (_, None) => {
                    lines.push(format!("MATCH    {rname}"));
                    item["matched"] = json!(true);
                }
                (_, Some(o)) => {
                    let held: Vec<String> = o
                        .events
                        .iter()
                        .map(|p| format!("{}={}", p.name, p.id))
                        .collect();
                    let until = o
                        .deadline
                        .map(|d| format!(" until +{}", crate::domain::human_duration(d)))
                        .unwrap_or_default();
                    match o.state {
                        CorrelationState::Fired => {
                            lines.push(format!("FIRE     {rname} with {}", held.join(", ")));
                            lines.extend(would_run(
                                set, d.rule, &o.events, o.deadline, &bodies, body, &id,
                            ));
                            item["fired"] = json!(true);
                        }
                        CorrelationState::Waiting => {
                            let missing = o.waiting_for.join(", ");
                            lines.push(format!(
                                "WAIT     {rname}: absence window opened by {id}; fires at{} unless `{missing}` comes",
                                until.trim_start_matches(" until")
                            ));
                            if let Some(deadline) = o.deadline {
                                open.push((deadline, d.rule, id.clone(), missing));
                            }
                        }
                        CorrelationState::Partial => {
                            if !o.cancelled.is_empty() {
                                open.retain(|(_, rule, opened, _)| {
                                    !(*rule == d.rule && o.cancelled.contains(opened))
                                });
                                lines.push(format!(
                                    "CLOSE    {rname}: `{}` came in time for {}",
                                    o.events.first().map(|p| p.name.as_str()).unwrap_or(""),
                                    o.cancelled.join(", ")
                                ));
                            } else {
                                lines.push(format!(
                                    "HOLD     {rname}: holds {}; waits for {}{until}",
                                    held.join(", "),
                                    o.waiting_for.join(", ")
                                ));
                            }
                        }
                    }
                    item["correlation"] = json!({
                        "state": o.state, "events": o.events, "deadline_ms": o.deadline,
                        "waiting_for": o.waiting_for, "closed": o.cancelled,
                    });
                }
            }
            items.push(item);
        }
        if decisions.is_empty() {
            lines.push("         (no rule)".to_string());
        }
        report.push(json!({"event": id, "from": name, "at_ms": at, "rules": items}));
    }
    for (deadline, rule, opened, missing) in open {
        let r = &set.rules[rule];
        lines.push(format!(
            "PENDING  {}/{}: fires at +{} unless `{missing}` comes (window opened by {opened})",
            r.rulebook,
            r.name,
            crate::domain::human_duration(deadline)
        ));
    }
    if t.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A rendered action for `test`'s text output: timeouts as durations (`5m`), not milliseconds.
fn readable(a: &Value) -> Value {
    let mut a = a.clone();
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "timeout"
                        && let Some(ms) = x.as_u64()
                    {
                        *x =
                            Value::String(crate::units::format_duration(Duration::from_millis(ms)));
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut a);
    a
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before the rules load: sources register their metric handles with it.
    let metrics = crate::telemetry::install_metrics();
    // Histograms keep their samples until upkeep drains them: without this, a service nobody
    // scrapes grows by ~150 bytes per event (benches/soak.sh).
    if let Some(h) = metrics.clone() {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                h.run_upkeep();
            }
        });
    }
    let dirs = args.dirs.dirs();
    let (set, snapshot) = match crate::rules::load_with_snapshot(&dirs) {
        Ok(s) => s,
        Err(errs) => anyhow::bail!("the rulebooks do not load:\n{errs}"),
    };
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
    let mut guard = args.guard.guard()?;
    let store = open_store(&args).await?;
    let tls_mode = match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
        (Some(cert), Some(key), _) => Tls::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, true) => Tls::SelfSigned { names: Vec::new() },
        _ => Tls::Off,
    };
    let tls = crate::server::listen::tls(&tls_mode)
        .await
        .context("cannot set up TLS")?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    guard.admin_hosts = crate::server::admin_plane::AdminHosts::new(addr, &args.guard.admin_hosts);
    guard.live = crate::server::guard::LiveLimit::for_connections(
        args.max_connections,
        args.guard.max_connections_per_client,
    );
    guard.users = Some(crate::access::Users::in_data(&args.data));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let set = Arc::new(set);
    // What serve prints for people and scripts; a closed stdout must not stop the service.
    let mut banner = format!("listening on {scheme}://{addr}\n");
    if let Some(t) = &tls {
        banner.push_str(&format!(
            "tls certificate sha256 fingerprint {}\n",
            t.fingerprint
        ));
    }
    for s in &set.sources {
        match &s.path {
            Some(p) if !args.role.accepts_events() => banner.push_str(&format!(
                "source {} ({}) at {p} on the ingest nodes (not here: --role worker)\n",
                s.name,
                s.verifier.kind()
            )),
            Some(p) => banner.push_str(&format!(
                "source {} ({}) at {scheme}://{addr}{p}\n",
                s.name,
                s.verifier.kind()
            )),
            None if s.listening.is_some() => {} // printed once bound (below)
            None => banner.push_str(&format!(
                "source {} ({}) internal\n",
                s.name,
                s.verifier.kind()
            )),
        }
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    let settings = crate::engine::Settings {
        concurrency: args.concurrency,
        retain: args.retain,
        role: args.role,
        shared: args.store != "embedded",
        rule_archive: Some(dirs.scripts.clone()),
        public_url: args.public_url.clone(),
        approval_check: args.approval_check,
        ..crate::engine::Settings::default()
    };
    // Scripts a crashed predecessor left running end before their jobs can run them again.
    let running = args.data.join("scripts-running");
    crate::actions::groups::end_survivors(&running);
    crate::actions::groups::record_in(&running)
        .with_context(|| format!("cannot create {}", running.display()))?;
    let engine = Engine::new(store, set, settings);
    let depth = engine.store().queue.depth();
    tracing::info!(
        pending = depth.ready + depth.delayed,
        more_in_storage = depth.spilled,
        concurrency = args.concurrency,
        "jobs recovered from the store"
    );
    // Archived beside serving: nothing waits for it (`engine::versions`).
    tokio::spawn({
        let engine = engine.clone();
        async move { engine.archive_rules(snapshot, engine.rules()).await }
    });
    engine.start();
    // Listening sources (syslog …): bound now, served until the HTTP listener stops.
    let stop_transports = tokio_util::sync::CancellationToken::new();
    let bound = crate::transport::start(&engine, &stop_transports)
        .await
        .context("cannot listen for a source")?;
    if !bound.is_empty() {
        use std::io::Write;
        let lines: String = bound
            .iter()
            .map(|b| format!("source {} at {}\n", b.source, b.addr))
            .collect();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(lines.as_bytes()).and_then(|()| out.flush());
    }
    let reloader = crate::reload::Reloader::new(dirs, engine.clone());
    reloader.spawn();
    let state = AppState {
        engine: engine.clone(),
        admin_token: std::env::var("RULEHOOK_ADMIN_TOKEN").ok().inspect(|t| {
            crate::secrets::remember(t);
        }),
        reloader: Some(reloader),
        metrics,
        body_timeout: args.body_timeout,
        console: Arc::new(if args.store == "embedded" {
            crate::console::Settings::new(Some(args.data.clone()))
        } else {
            // Other nodes' events reach this node's live pages through the history.
            let mut s = crate::console::Settings::new(None);
            s.poll_history = Some(Duration::from_secs(2));
            s
        }),
        guard: Arc::new(guard),
    };
    crate::server::listen::serve(
        listener,
        app(state),
        tls.map(|t| t.config),
        crate::server::listen::Limits {
            max_connections: args.max_connections,
            per_client: args.guard.max_connections_per_client,
            header_timeout: args.guard.header_timeout,
            idle_timeout: args.guard.idle_timeout,
        },
        shutdown_signal(),
        Duration::from_secs(5),
    )
    .await?;
    stop_transports.cancel();
    tracing::info!("no longer accepting events; waiting for running actions");
    engine.shutdown(args.grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// The store `--store` names.
async fn open_store(args: &ServeArgs) -> anyhow::Result<Store> {
    if args.store == "embedded" {
        if args.role != crate::engine::Role::All {
            anyhow::bail!(
                "--role {} needs a store shared by several nodes (--store nats://HOST:PORT); the embedded store serves one node, which does everything",
                format!("{:?}", args.role).to_lowercase()
            );
        }
        let store = Store::embedded(&args.data)
            .with_context(|| format!("cannot open the store in {}", args.data.display()))?;
        tracing::info!(data = %args.data.display(), "embedded store");
        return Ok(store);
    }
    if !args.store.starts_with("nats://") && !args.store.starts_with("tls://") {
        anyhow::bail!(
            "--store `{}`: use `embedded` or a NATS address such as nats://127.0.0.1:4222",
            args.store
        );
    }
    // The data directory still records this node's running scripts: one node owns it.
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    let lock = crate::store::sqlite::lock_dir(&args.data)?;
    std::mem::forget(lock); // held until the process exits
    let mut config = crate::store::nats::NatsConfig::new(&args.store, &args.store_prefix);
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
    let store = Store::nats(config)
        .await
        .with_context(|| format!("cannot open the JetStream store at {}", args.store))?;
    tracing::info!(nats = %args.store, prefix = %args.store_prefix, role = %format!("{:?}", args.role).to_lowercase(), "JetStream store");
    Ok(store)
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
    let path = a.file.clone().or(a.positional.clone());
    let body = read_body(path.as_deref())?;
    let now = std::time::SystemTime::now();
    if !crate::verify::KINDS.contains(&a.kind.as_str()) || a.kind == "internal" {
        anyhow::bail!(
            "unknown kind `{}`; expected one of: {}",
            a.kind,
            crate::verify::KINDS
                .iter()
                .filter(|k| **k != "internal")
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let secret = match (&a.secret, a.kind.as_str()) {
        (_, "none") => String::new(),
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
        let alg = crate::verify::Algorithm::parse(&a.algorithm)
            .with_context(|| format!("algorithm `{}`: use sha1, sha256 or sha512", a.algorithm))?;
        let mac = crate::verify::mac::sign(alg, secret.as_bytes(), &[&body]);
        let sig = match a.encoding.as_str() {
            "hex" => hex::encode(mac),
            "base64" => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(mac)
            }
            other => anyhow::bail!("encoding `{other}`: use hex or base64"),
        };
        vec![(
            signature_header.to_ascii_lowercase(),
            format!("{}{sig}", a.prefix),
        )]
    } else {
        crate::verify::sign_like(&a.kind, &secret, &body, now).with_context(|| {
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
