//! The command line: `serve`, `check`, `test` (spec §1). `anyhow` lives here, at the edge.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::journal::{Journal, SqliteJournal};
use crate::rules::{Dirs, EventDoc, RuleSet};
use crate::server::{AppState, app};

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
    /// How long running actions may take to finish on SIGTERM before the service exits.
    #[arg(long, env = "RULEHOOK_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
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
        Command::Serve(s) => {
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
            match rt.block_on(serve(s)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
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
                "received_at": crate::journal::rfc3339(0), "headers": headers,
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
                    Ok(r) => serde_json::to_value(r).unwrap_or(Value::Null),
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
    let set = match crate::rules::load(&args.dirs.dirs()) {
        Ok(s) => s,
        Err(errs) => anyhow::bail!("the rulebooks do not load:\n{errs}"),
    };
    for w in &set.warnings {
        tracing::warn!("{w}");
    }
    let journal: Arc<dyn Journal> = Arc::new(
        SqliteJournal::open(&args.data)
            .with_context(|| format!("cannot open the journal in {}", args.data.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let set = Arc::new(set);
    println!("listening on http://{addr}");
    for s in &set.sources {
        match &s.path {
            Some(p) => println!(
                "source {} ({}) at http://{addr}{p}",
                s.name,
                s.verifier.kind()
            ),
            None => println!("source {} ({}) internal", s.name, s.verifier.kind()),
        }
    }
    let engine = Engine::new(journal, set, args.concurrency);
    engine.start();
    let state = AppState {
        engine: engine.clone(),
        admin_token: std::env::var("RULEHOOK_ADMIN_TOKEN").ok(),
    };
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    tracing::info!("no longer accepting events; waiting for running actions");
    engine.shutdown(args.grace).await;
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
