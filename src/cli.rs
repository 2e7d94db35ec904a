//! The command line: `serve`, `check`, `test` (spec §1). `anyhow` lives here, at the edge.

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
use crate::rules::{Dirs, EventDoc, RuleSet};
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
    Serve(ServeArgs),
    /// Validate rulebooks, scripts and templates; print file:line:col errors.
    Check(DirArgs),
    /// Dry run: which rules an event would match, why not, and what would run.
    Test(TestArgs),
    /// Sign a JSON body exactly like a sender of KIND and POST it; print the status and body.
    Send(SendArgs),
    /// Replay stored events through candidate rulebooks without running anything; report
    /// per rule what would now match, no longer match, or run differently.
    Whatif(WhatifArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WhatifArgs {
    /// How far back to replay (e.g. 7d, 12h).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub since: Duration,
    /// The data directory of the service (read-only; `serve` may be running on it).
    #[arg(long, env = "RULEHOOK_DATA", default_value = "./data")]
    pub data: PathBuf,
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
    /// The shared secret (also read from RULEHOOK_SEND_SECRET).
    #[arg(long, env = "RULEHOOK_SEND_SECRET", default_value = "")]
    pub secret: String,
    /// The body file; `-` or nothing reads standard input.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The body file, as a positional `-` for standard input.
    #[arg(value_name = "FILE|-")]
    pub positional: Option<PathBuf>,
    /// For `--kind hmac`: the signature header.
    #[arg(long, default_value = "x-signature")]
    pub header: String,
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
    #[arg(long, env = "RULEHOOK_RULEBOOKS", default_value = "./rulebooks")]
    pub rulebooks: PathBuf,
    #[arg(long, env = "RULEHOOK_SCRIPTS", default_value = "./scripts")]
    pub scripts: PathBuf,
    #[arg(long, env = "RULEHOOK_TEMPLATES", default_value = "./templates")]
    pub templates: PathBuf,
}

impl DirArgs {
    fn dirs(&self) -> Dirs {
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
    /// Where the journal lives.
    #[arg(long, env = "RULEHOOK_DATA", default_value = "./data")]
    pub data: PathBuf,
    #[arg(long, env = "RULEHOOK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How many jobs (matched rules) may run at once.
    #[arg(long, env = "RULEHOOK_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
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
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s)
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// The event body (JSON) to test.
    #[arg(long)]
    pub event: PathBuf,
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
        Command::Serve(s) => run_async(serve(s)),
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
    let text = std::fs::read_to_string(&t.event)
        .with_context(|| format!("cannot read {}", t.event.display()))?;
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", t.event.display()))?;
    if let Some(s) = &t.source
        && set.source(s).is_none()
    {
        anyhow::bail!("no source named `{s}` in {}", t.dirs.rulebooks.display());
    }
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
    let doc = EventDoc::new(body.clone());
    let mut report = Vec::new();
    for v in set.explain(t.source.as_deref(), &doc) {
        let rule = &set.rules[v.rule];
        let mut actions = Vec::new();
        if v.matched {
            let meta = json!({
                "id": "test", "source": t.source.clone().unwrap_or_default(),
                "kind": t.source.as_deref().and_then(|s| set.source(s)).map(|s| s.verifier.kind()).unwrap_or(""),
                "received_at": crate::domain::rfc3339(0), "headers": headers,
                "rulebook": rule.rulebook, "rule": rule.name,
            });
            // A dry run has no real previous result: later actions see a placeholder one.
            for (i, a) in rule.actions.iter().enumerate() {
                let previous = if i == 0 {
                    Value::Null
                } else {
                    json!({"exit_code": 0, "stdout": format!("<stdout of action {}>", i - 1)})
                };
                let ctx = crate::templates::context(
                    json!({"event": body, "meta": meta, "previous": previous}),
                );
                actions.push(match a.render(&set.templates, &ctx) {
                    Ok(r) => r.for_history(),
                    Err(e) => json!({"render_error": e}),
                });
            }
        }
        report.push(json!({
            "rulebook": rule.rulebook, "rule": rule.name, "matched": v.matched,
            "why_not": v.why, "actions": actions,
        }));
    }
    if t.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for r in &report {
            let name = format!(
                "{}/{}",
                r["rulebook"].as_str().unwrap_or(""),
                r["rule"].as_str().unwrap_or("")
            );
            if r["matched"] == true {
                println!("MATCH    {name}");
                for a in r["actions"].as_array().into_iter().flatten() {
                    println!("         would run: {a}");
                }
            } else {
                println!("no match {name}");
                for w in r["why_not"].as_array().into_iter().flatten() {
                    println!("         {}", w.as_str().unwrap_or(""));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
    let set = match crate::rules::load(&dirs) {
        Ok(s) => s,
        Err(errs) => anyhow::bail!("the rulebooks do not load:\n{errs}"),
    };
    for w in &set.warnings {
        tracing::warn!("{w}");
    }
    let store = Store::embedded(&args.data)
        .with_context(|| format!("cannot open the store in {}", args.data.display()))?;
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
            Some(p) => banner.push_str(&format!(
                "source {} ({}) at {scheme}://{addr}{p}\n",
                s.name,
                s.verifier.kind()
            )),
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
        ..crate::engine::Settings::default()
    };
    let engine = Engine::new(store, set, settings);
    engine.start();
    let reloader = crate::reload::Reloader::new(dirs, engine.clone());
    reloader.spawn();
    let state = AppState {
        engine: engine.clone(),
        admin_token: std::env::var("RULEHOOK_ADMIN_TOKEN").ok(),
        reloader: Some(reloader),
        metrics,
        body_timeout: args.body_timeout,
    };
    crate::server::listen::serve(
        listener,
        app(state),
        tls.map(|t| t.config),
        args.max_connections,
        shutdown_signal(),
        Duration::from_secs(5),
    )
    .await?;
    tracing::info!("no longer accepting events; waiting for running actions");
    engine.shutdown(args.grace).await;
    Ok(())
}

async fn send(a: SendArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = a.file.clone().or(a.positional.clone());
    let body = match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?
        }
        _ => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("cannot read standard input")?;
            b
        }
    };
    let now = std::time::SystemTime::now();
    let headers = if a.kind == "hmac" {
        let alg = crate::verify::Algorithm::parse(&a.algorithm)
            .with_context(|| format!("algorithm `{}`: use sha1, sha256 or sha512", a.algorithm))?;
        let mac = crate::verify::mac::sign(alg, a.secret.as_bytes(), &[&body]);
        let sig = match a.encoding.as_str() {
            "hex" => hex::encode(mac),
            "base64" => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(mac)
            }
            other => anyhow::bail!("encoding `{other}`: use hex or base64"),
        };
        vec![(a.header.to_ascii_lowercase(), format!("{}{sig}", a.prefix))]
    } else {
        crate::verify::sign_like(&a.kind, &a.secret, &body, now)
            .with_context(|| format!("unknown kind `{}`", a.kind))?
    };
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(a.insecure)
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("rulehook/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut req = client
        .post(&a.url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot POST to {}", a.url))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    println!("{}", status.as_u16());
    println!("{text}");
    if !status.is_success() {
        anyhow::bail!("the receiver answered {status}");
    }
    Ok(())
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
