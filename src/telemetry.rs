//! Logging through `tracing`: readable lines by default (`line`: written directly when not on
//! a terminal), JSON lines with `--log-json`. `RUST_LOG` filters (default
//! `info,rustls=error`: rustls warns about what TLS clients send, e.g. an address as the server
//! name, once per connection; refused handshakes are counted per source instead).

use tracing_subscriber::EnvFilter;

mod line;

/// The log filter without `RUST_LOG`.
const DEFAULT_FILTER: &str = "info,rustls=error";

pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        // Every line passes the secret mask (`${env:…}`/`${file:…}` values, credentials).
        .with_writer(|| crate::secrets::MaskingWriter(std::io::stderr()));
    // A second init (tests start several servers in one process) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else if ansi {
        builder.try_init()
    } else {
        // The same text as the default format without colours, at a fraction of the cost.
        builder
            .event_format(line::Line)
            .fmt_fields(line::LineFields)
            .try_init()
    };
}

/// Metric names, in one place (Prometheus text at `GET /metrics`).
pub mod names {
    pub const RECEIVED: &str = "rulehook_events_received_total";
    pub const ACCEPTED: &str = "rulehook_events_accepted_total";
    pub const REJECTED: &str = "rulehook_events_rejected_total";
    /// Messages of a `keep: matched` source that matched nothing (counted, not stored).
    pub const UNMATCHED: &str = "rulehook_events_unmatched_total";
    /// Messages a listening transport dropped or could not read, per source and reason.
    pub const MALFORMED: &str = "rulehook_messages_malformed_total";
    pub const DROPPED: &str = "rulehook_messages_dropped_total";
    pub const MATCHES: &str = "rulehook_rule_matches_total";
    pub const THROTTLED: &str = "rulehook_rule_throttled_total";
    pub const RUNS: &str = "rulehook_action_runs_total";
    pub const RUN_SECONDS: &str = "rulehook_action_duration_seconds";
    pub const QUEUE: &str = "rulehook_jobs_in_memory";
    pub const RELOADS: &str = "rulehook_reloads_total";
    pub const RELOAD_ERRORS: &str = "rulehook_reload_errors_total";
    pub const COMMIT_SECONDS: &str = "rulehook_journal_commit_seconds";
    pub const BATCH: &str = "rulehook_journal_batch_size";
    pub const QUEUE_LEASED: &str = "rulehook_jobs_leased";
    pub const QUEUE_DELAYED: &str = "rulehook_jobs_delayed";
    pub const CORRELATION_EVICTED: &str = "rulehook_correlation_evicted_total";
    pub const CORRELATION_FIRED: &str = "rulehook_correlation_fired_total";
    /// Every pending job (in memory or only in storage), against `--max-pending`.
    pub const PENDING: &str = "rulehook_jobs_pending";
    pub const MAX_PENDING: &str = "rulehook_jobs_max_pending";
    /// Absence jobs waiting for their deadline and jobs a maintenance window holds (not counted
    /// against `--max-pending`).
    pub const WAITING: &str = "rulehook_jobs_waiting";

    /// The run counter and duration histogram of an action kind and result, registered once
    /// (a labelled look-up per attempt showed in profiles).
    pub fn run_metrics(kind: &'static str, ok: bool) -> (metrics::Counter, metrics::Histogram) {
        type Handles = Vec<(&'static str, bool, metrics::Counter, metrics::Histogram)>;
        static CACHE: std::sync::Mutex<Handles> = std::sync::Mutex::new(Vec::new());
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, c, h)) = cache.iter().find(|(k, o, _, _)| *k == kind && *o == ok) {
            return (c.clone(), h.clone());
        }
        let result = if ok { "ok" } else { "failed" };
        let c = metrics::counter!(RUNS, "action" => kind, "result" => result);
        let h = metrics::histogram!(RUN_SECONDS, "action" => kind);
        cache.push((kind, ok, c.clone(), h.clone()));
        (c, h)
    }
}

/// Installs the process-wide Prometheus recorder; `None` if one is already installed.
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ])
        .ok()?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(names::BATCH.into()),
            &[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ],
        )
        .ok()?;
    let handle = builder.install_recorder().ok()?;
    for (name, help) in [
        (names::RECEIVED, "Requests received on a source path"),
        (
            names::ACCEPTED,
            "Events verified and stored (duplicate=true: a redelivery, not processed again)",
        ),
        (names::REJECTED, "Requests refused, by reason"),
        (names::MATCHES, "Rule matches that created a job"),
        (names::THROTTLED, "Rule matches recorded as throttled"),
        (names::RUNS, "Action attempts by result"),
        (names::RELOADS, "Successful rule set reloads"),
        (
            "rulehook_store_unreadable_total",
            "Stored messages (JetStream) this node could not decode: kept in their stream, logged",
        ),
        (
            names::CORRELATION_EVICTED,
            "Correlation partial matches evicted past max_open",
        ),
        (
            names::CORRELATION_FIRED,
            "Correlation rules that completed their pattern",
        ),
        (
            names::RELOAD_ERRORS,
            "Reloads refused because the new files did not validate",
        ),
    ] {
        metrics::describe_counter!(name, help);
    }
    // Shown at 0 from the start: Prometheus' `increase()` cannot see a counter's first step
    // when its series appears with it, so an alert on failed reloads missed the first one.
    for name in [names::RELOADS, names::RELOAD_ERRORS] {
        metrics::counter!(name).increment(0);
    }
    for (name, help) in [
        (names::RUN_SECONDS, "Duration of action attempts"),
        (names::COMMIT_SECONDS, "Journal transaction commit latency"),
        (
            names::BATCH,
            "Requests per journal transaction (group commit)",
        ),
    ] {
        metrics::describe_histogram!(name, help);
    }
    metrics::describe_gauge!(
        names::QUEUE,
        "Jobs ready to run (waiting for a worker) in this process's queue memory"
    );
    metrics::describe_gauge!(names::QUEUE_LEASED, "Jobs leased to a worker (running)");
    metrics::describe_gauge!(
        names::PENDING,
        "Jobs waiting to run, in memory or only in storage (compared with --max-pending)"
    );
    metrics::describe_gauge!(
        names::MAX_PENDING,
        "The --max-pending bound: past it new events are answered 503 (0: no bound)"
    );
    metrics::describe_gauge!(
        names::WAITING,
        "Absence jobs that only wait for their deadline, and jobs held by a maintenance window (not back pressure)"
    );
    metrics::describe_gauge!(
        names::QUEUE_DELAYED,
        "Jobs waiting for a retry's delay to pass"
    );
    Some(handle)
}
