//! `rulehook events`, `event`, `jobs`, `replay`, `rerun`: the history of a running service, read
//! and acted on through its admin API, printed for people (or as the API's JSON with `--json`).

use std::time::Duration;

use clap::Args;
use serde_json::Value;

/// Where the running service is, and how to reach its admin API.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The service's base URL.
    #[arg(long, env = "RULEHOOK_URL", default_value = "http://127.0.0.1:8080", value_parser = super::parse_service_url)]
    pub url: String,
    /// Accept any TLS certificate (a service with --tls-self-signed).
    #[arg(long)]
    pub insecure: bool,
    /// Print the admin API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only events of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// unmatched, throttled, pending, done or failed.
    #[arg(long)]
    pub status: Option<String>,
    /// Only events that matched (or were throttled on) this rule.
    #[arg(long)]
    pub rule: Option<String>,
    /// Received since: a duration back from now (`15m`, `2h`) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// pending, awaiting_approval, done, rejected or failed (the dead letters).
    #[arg(long)]
    pub status: Option<String>,
    /// Only jobs of this rule.
    #[arg(long)]
    pub rule: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    /// The event id (`rulehook events` lists them).
    pub id: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RerunArgs {
    /// The job id (`rulehook jobs --status failed` lists the dead letters).
    pub id: String,
    /// Run the rule version the job matched even if the rule changed since (by default a
    /// changed rule runs its current version: your fix).
    #[arg(long)]
    pub as_matched: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// A client of one service's admin API.
pub(super) struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    pub(super) fn new(a: &AdminArgs) -> anyhow::Result<Api> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(a.insecure)
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("rulehook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            base: a.url.trim_end_matches('/').to_string(),
            http,
            token: std::env::var("RULEHOOK_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        self.call_with(method, path, None).await
    }

    /// `call` with a JSON body.
    pub(super) async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the service at {}: {}\nhint: is `rulehook serve` running there? Set --url or RULEHOOK_URL",
                self.base,
                crate::actions::http::error_chain(&e)
            )
        })?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let text = resp.text().await.unwrap_or_default();
        let parsed = serde_json::from_str::<Value>(&text);
        if status.is_success() {
            // The admin API answers JSON: anything else came from something in between (a
            // proxy's or a single sign-on's page) or from another service at a wrong URL.
            return parsed.map_err(|_| {
                anyhow::anyhow!(
                    "{url} answered {status} with {}, not JSON: that is not rulehook's admin API (a proxy or sign-in page in between, or a wrong --url / RULEHOOK_URL?); the answer began: {}",
                    content_type.map_or_else(|| "no Content-Type".to_string(), |t| format!("Content-Type `{t}`")),
                    first_bytes(&text)
                )
            });
        }
        let body = parsed.unwrap_or(Value::Null);
        let message = match body["message"].as_str() {
            Some(m) => m.to_string(),
            // Not the admin API's error body: what came instead, so it can be told apart.
            None => format!(
                "(not the admin API's answer; it began: {})",
                first_bytes(&text)
            ),
        };
        match status.as_u16() {
            401 => {
                let why = match (&self.token, loopback_url(&self.base)) {
                    (Some(_), _) => {
                        "the RULEHOOK_ADMIN_TOKEN set here is not one the service knows; set it to the service's admin token or to your user's API token"
                    }
                    (None, true) => {
                        "the service asks for a token even from this host (--admin-require-token); set RULEHOOK_ADMIN_TOKEN to the service's admin token or to your user's API token"
                    }
                    (None, false) => {
                        "set RULEHOOK_ADMIN_TOKEN to the service's admin token or to your user's API token"
                    }
                };
                anyhow::bail!("the admin API refused the request ({message}); {why}")
            }
            _ => Err(Refused {
                status: status.as_u16(),
                text: format!("{} answered {status}: {message}", self.base),
            }
            .into()),
        }
    }
}

/// The first 120 characters of an answer, on one line, quoted (control characters escaped).
fn first_bytes(text: &str) -> String {
    let head: String = text.chars().take(120).collect();
    let more = if text.chars().nth(120).is_some() {
        "…"
    } else {
        ""
    };
    format!("{:?}{more}", head)
}

/// A refusal by the admin API (anything but 401, which `call_with` explains itself): its
/// status, so that a caller tells a 404 by its status and not by its text (a message such as
/// `approved by anna at 2026-12-07T21:57:43.404Z` holds "404" too).
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) status: u16,
    text: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Refused {}

/// The status the admin API refused with, when `e` is such a refusal.
pub(super) fn refused_with(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<Refused>().map(|r| r.status)
}

/// Whether `base` names this host (a loopback address or `localhost`).
fn loopback_url(base: &str) -> bool {
    let host = reqwest::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

pub(super) fn seg(id: &str) -> String {
    crate::actions::outbound::urlencode(id)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// How long a held job waits (`held_by`'s `until`): `until <time>`, or `with no end` under a
/// window in force all day on every day (`until: null`).
fn held_until(held_by: &Value) -> String {
    match held_by["until"].as_str() {
        Some(t) => format!("until {t}"),
        None => "with no end".to_string(),
    }
}

pub(super) fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn events(a: EventsArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.admin)?;
    let q = query(&[
        ("source", a.source),
        ("status", a.status),
        ("rule", a.rule),
        ("since", a.since),
        ("limit", Some(a.limit.to_string())),
    ]);
    let v = api
        .call(reqwest::Method::GET, &format!("/api/events{q}"))
        .await?;
    if a.admin.json {
        return print_json(&v);
    }
    let list = v["events"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no events");
        return Ok(());
    }
    println!(
        "{:<24}  {:<36}  {:<14}  {:<9}  {:>7}  {:>9}",
        "RECEIVED", "ID", "SOURCE", "STATUS", "MATCHED", "THROTTLED"
    );
    for e in &list {
        println!("{}", event_row(e));
    }
    Ok(())
}

/// One row of `rulehook events`, in the header's columns. The counts are written as text
/// first: a JSON value ignores the width it is given, which left them out of their columns.
/// A `pending` event whose jobs wait for a person says so after the columns.
fn event_row(e: &Value) -> String {
    let row = format!(
        "{:<24}  {:<36}  {:<14}  {:<9}  {:>7}  {:>9}",
        s(&e["received_at"]),
        s(&e["id"]),
        s(&e["source"]),
        s(&e["status"]),
        e["matched_rules"].to_string(),
        e["throttled"].to_string()
    );
    match e["awaiting_approval"].as_u64().unwrap_or(0) {
        0 => row,
        1 => format!("{row}  awaiting approval"),
        n => format!("{row}  {n} jobs awaiting approval"),
    }
}

pub async fn jobs(a: JobsArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.admin)?;
    let q = query(&[
        ("status", a.status),
        ("rule", a.rule),
        ("limit", Some(a.limit.to_string())),
    ]);
    let v = api
        .call(reqwest::Method::GET, &format!("/api/jobs{q}"))
        .await?;
    if a.admin.json {
        return print_json(&v);
    }
    let list = v["jobs"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no jobs");
        return Ok(());
    }
    for j in &list {
        println!("{}", job_line(j));
    }
    Ok(())
}

/// One job of `rulehook jobs`: where a failed or pending job stands; a finished one, when.
fn job_line(j: &Value) -> String {
    let head = format!(
        "{}  {:<7}  {}/{}",
        s(&j["id"]),
        s(&j["status"]),
        s(&j["rulebook"]),
        s(&j["rule"])
    );
    let error = j["error"]
        .as_str()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    let attempts = j["attempts"].as_u64().unwrap_or(0);
    match s(&j["status"]) {
        "done" | "rejected" => format!("{head}  finished {}{error}", s(&j["updated_at"])),
        "awaiting_approval" => format!(
            "{head}  awaiting approval ({}) until {}",
            s(&j["awaiting"]["reason"]),
            s(&j["awaiting"]["deadline"])
        ),
        "pending" if j["held_by"].is_object() => format!(
            "{head}  held by maintenance window `{}` ({}) {}",
            s(&j["held_by"]["window"]),
            s(&j["held_by"]["during"]),
            held_until(&j["held_by"])
        ),
        "pending" if attempts == 0 => format!("{head}  next: action {}", j["action_index"]),
        "pending" => format!(
            "{head}  retrying action {} ({attempts} attempt(s) so far)",
            j["action_index"]
        ),
        _ => format!(
            "{head}  stopped at action {} after {attempts} attempt(s){error}",
            j["action_index"]
        ),
    }
}

pub async fn event(a: IdArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.admin)?;
    let v = api
        .call(reqwest::Method::GET, &format!("/api/events/{}", seg(&a.id)))
        .await
        .map_err(|e| not_found(e, "event", &a.id))?;
    if a.admin.json {
        return print_json(&v);
    }
    let mut v = v;
    mark_held(&api, &mut v).await;
    mark_if_undecided(&api, &mut v).await;
    print!("{}", timeline(&v));
    Ok(())
}

/// Gives each pending match that a maintenance window holds its `held_by` (`window`,
/// `during`, `until`), from `GET /api/windows`, as `rulehook jobs` shows it: the event's own
/// answer does not carry it. Nothing when the service cannot say (an older one).
async fn mark_held(api: &Api, v: &mut Value) {
    let pending = v["matches"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["status"] == "pending"));
    if !pending {
        return;
    }
    let Ok(w) = api.call(reqwest::Method::GET, "/api/windows").await else {
        return;
    };
    let held = w["held"].as_array().cloned().unwrap_or_default();
    for m in v["matches"].as_array_mut().into_iter().flatten() {
        // A service that records holds already said (every node's view); else this node's list.
        if m["held_by"].is_object() {
            continue;
        }
        if let Some(h) = held.iter().find(|h| h["job"] == m["id"]) {
            m["held_by"] = serde_json::json!({
                "window": h["window"], "during": h["during"], "until": h["until"],
            });
        }
    }
}

/// Gives each match awaiting approval what happens if nobody decides (`if_undecided`: the
/// deadline's `on_timeout`, or a window's approval when it ends), from `GET /api/approvals`:
/// the event's own answer does not carry it. Nothing when the service cannot say.
async fn mark_if_undecided(api: &Api, v: &mut Value) {
    let awaiting = v["matches"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["awaiting"].is_object()));
    if !awaiting {
        return;
    }
    let Ok(a) = api.call(reqwest::Method::GET, "/api/approvals").await else {
        return;
    };
    let requests = a["approvals"].as_array().cloned().unwrap_or_default();
    for m in v["matches"].as_array_mut().into_iter().flatten() {
        let found = requests.iter().find(|r| r["job"] == m["id"]);
        if let (Some(r), true) = (found, m["awaiting"].is_object()) {
            m["awaiting"]["if_undecided"] = r["if_undecided"].clone();
        }
    }
}

pub async fn replay(a: IdArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.admin)?;
    let v = api
        .call(
            reqwest::Method::POST,
            &format!("/api/events/{}/replay", seg(&a.id)),
        )
        .await
        .map_err(|e| not_found(e, "event", &a.id))?;
    if a.admin.json {
        return print_json(&v);
    }
    println!(
        "replayed {} as event {}: {} rule(s) matched",
        a.id,
        s(&v["id"]),
        v["matched"]
    );
    if let Some(source) = v["source_gone"].as_str() {
        println!(
            "  its source `{source}` is no longer in the rulebooks, so no rule can match it (add the source back, then replay)"
        );
    }
    Ok(())
}

pub async fn rerun(a: RerunArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.admin)?;
    let path = format!(
        "/api/jobs/{}/rerun{}",
        seg(&a.id),
        if a.as_matched { "?as_matched=true" } else { "" }
    );
    let v = api
        .call(reqwest::Method::POST, &path)
        .await
        .map_err(|e| {
            let m = e.to_string();
            let status = refused_with(&e);
            if status == Some(404) {
                anyhow::anyhow!(
                    "no job with id {} (list the dead letters with `rulehook jobs --status failed`)",
                    a.id
                )
            } else if status == Some(409) && m.contains("is rejected") {
                anyhow::anyhow!(
                    "job {} was rejected at approval (nothing ran), so it is not a dead letter: re-run is for jobs that failed; to run it again, replay its event (`rulehook replay EVENT`)",
                    a.id
                )
            } else if status == Some(409) && m.contains("not a dead letter") {
                anyhow::anyhow!(
                    "job {} is not a dead letter: only failed jobs can be re-run (list them with `rulehook jobs --status failed`)",
                    a.id
                )
            } else {
                e
            }
        })?;
    if a.admin.json {
        return print_json(&v);
    }
    println!("job {} queued again: runs {}", a.id, s(&v["runs"]));
    Ok(())
}

fn not_found(e: anyhow::Error, what: &str, id: &str) -> anyhow::Error {
    if refused_with(&e) == Some(404) {
        anyhow::anyhow!("no {what} with id {id} (list them with `rulehook events`)")
    } else {
        e
    }
}

/// An event's story, for people: what came in, which rules matched and what their actions did,
/// what was throttled, and why the other rules did not match.
pub fn timeline(v: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "event {}  source {} ({})  received {}  status {}",
        s(&v["id"]),
        s(&v["source"]),
        s(&v["kind"]),
        s(&v["received_at"]),
        s(&v["status"])
    );
    if let Some(d) = v["delivery_id"].as_str() {
        let _ = writeln!(o, "  delivery {d}, {} duplicate(s)", v["duplicates"]);
    }
    if let Some(p) = v["parent"].as_str() {
        let _ = writeln!(o, "  parent {p}");
    }
    for c in v["children"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "  emitted {}", s(c));
    }
    for c in v["correlations"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "correlation {}/{}  {}",
            s(&c["rulebook"]),
            s(&c["rule"]),
            s(&c["summary"])
        );
    }
    for m in v["matches"].as_array().into_iter().flatten() {
        match_lines(&mut o, m);
    }
    for t in v["throttled"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "throttled {}/{}  group {}  until {}  (fired by event {})",
            s(&t["rulebook"]),
            s(&t["rule"]),
            s(&t["group"]),
            s(&t["until"]),
            s(&t["fired_by"])
        );
    }
    let mut others = Vec::new();
    for n in v["not_matched"].as_array().into_iter().flatten() {
        if n["other_source"] == true {
            others.push(format!("{}/{}", s(&n["rulebook"]), s(&n["rule"])));
            continue;
        }
        let label = if n["matches_now"] == true {
            "added since"
        } else {
            "no match"
        };
        let _ = writeln!(o, "{label} {}/{}", s(&n["rulebook"]), s(&n["rule"]));
        for w in n["why"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  {}", s(w));
        }
    }
    if let Some(line) = crate::rules::other_sources_line(&others) {
        let _ = writeln!(o, "{line}");
    }
    let body = serde_json::to_string_pretty(&v["body"]).unwrap_or_default();
    let _ = writeln!(o, "body");
    for l in body.lines() {
        let _ = writeln!(o, "  {l}");
    }
    o
}

/// One match of an event in `rulehook event`: its job's line, what holds or awaits it, the
/// decision, then its attempts.
fn match_lines(o: &mut String, m: &Value) {
    use std::fmt::Write;
    let error = m["error"].as_str().unwrap_or_default();
    let not_fired = m["status"] == "done" && error.starts_with(crate::domain::DID_NOT_FIRE);
    let status = if not_fired {
        "not fired"
    } else if m["status"] == "done" && error.starts_with(crate::domain::SHADOW_NOTE) {
        "shadow"
    } else if m["status"] == "done" && error.starts_with(crate::engine::SKIPPED_NOTE) {
        "skipped"
    } else {
        s(&m["status"])
    };
    let _ = writeln!(
        o,
        "matched {}/{}  job {}  {}{}",
        s(&m["rulebook"]),
        s(&m["rule"]),
        s(&m["id"]),
        status,
        match error
            .strip_prefix(status)
            .and_then(|e| e.strip_prefix(": "))
        {
            // The note already starts with the status (`shadow: …`, `skipped: …`).
            Some(rest) => format!(": {rest}"),
            None if error.is_empty() => String::new(),
            None => format!(": {error}"),
        }
    );
    if let Some(h) = m.get("held_by").filter(|h| h.is_object()) {
        let _ = writeln!(
            o,
            "  held by maintenance window `{}` ({}) {}",
            s(&h["window"]),
            s(&h["during"]),
            held_until(h)
        );
    }
    if let Some(a) = m.get("awaiting").filter(|a| a.is_object()) {
        let then = match a["if_undecided"].as_str() {
            Some(then) => format!("if nobody decides: {then}"),
            None => format!("on_timeout decides at {}", s(&a["deadline"])),
        };
        let _ = writeln!(
            o,
            "  awaiting approval ({}) since {}; {then}",
            s(&a["reason"]),
            s(&a["requested_at"]),
        );
    }
    if let Some(d) = m["decision"]["summary"].as_str() {
        let _ = writeln!(o, "  {d}");
    }
    for at in m["attempts"].as_array().into_iter().flatten() {
        attempt_lines(o, at);
    }
}

/// One attempt of a job in `rulehook event`: its line, then what it printed or answered,
/// and for `run_playbook` the recap per host.
fn attempt_lines(o: &mut String, at: &Value) {
    use std::fmt::Write;
    let phase = if at["phase"] == "on_failure" {
        "on_failure "
    } else {
        ""
    };
    let mut line = format!(
        "  {phase}#{} {}  attempt {}  {}",
        at["action_index"],
        s(&at["action"]),
        at["attempt"],
        s(&at["status"])
    );
    if let Some(d) = at["duration"].as_str() {
        let _ = write!(line, " in {d}");
    }
    if let Some(c) = at["exit_code"].as_i64() {
        let _ = write!(line, "  exit {c}");
    }
    if let Some(c) = at["http_status"].as_i64() {
        let _ = write!(line, "  HTTP {c}");
    }
    let _ = write!(line, "  run {}", s(&at["run_id"]));
    let _ = writeln!(o, "{line}");
    // An HTTP action's answer is its response body, not a program's output.
    let out = if at["http_status"].is_i64() {
        "response"
    } else {
        "stdout"
    };
    for (label, key) in [("error", "error"), (out, "stdout"), ("stderr", "stderr")] {
        if let Some(t) = at[key].as_str().map(str::trim_end)
            && !t.is_empty()
        {
            for (i, l) in t.lines().enumerate() {
                let tag = if i == 0 { label } else { "" };
                let _ = writeln!(o, "      {tag:<7} {l}");
            }
        }
    }
    if at["result"]["shadow"] == true {
        // Shadow mode: nothing ran; what would have run is the point of the record.
        let shown = crate::actions::for_people(&at["rendered"]);
        let _ = writeln!(o, "      would run {shown}");
    } else if let Some(hosts) = at["result"]["hosts"].as_object() {
        // run_playbook: one line per host, as Ansible's recap.
        for (h, c) in hosts {
            let counts: Vec<String> = ["ok", "changed", "failed", "unreachable", "skipped"]
                .iter()
                .map(|k| format!("{k}={}", c[*k]))
                .collect();
            let _ = writeln!(o, "      host {h}  {}", counts.join(" "));
        }
    } else if let Some(r) = at["result"].as_object()
        && !r.is_empty()
    {
        let _ = writeln!(o, "      result  {}", Value::Object(r.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An HTTP server on loopback that answers every request with `answer`, for a few.
    async fn answering(answer: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        base
    }

    fn api(base: String) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            base,
            http: reqwest::Client::new(),
            token: None,
        }
    }

    #[tokio::test]
    async fn a_2xx_that_is_not_json_is_an_error_naming_url_type_and_start() {
        let base = answering(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 40\r\nConnection: close\r\n\r\n<html><body>Sign in first</body></html>\n",
        )
        .await;
        let err = api(base.clone())
            .call(reqwest::Method::GET, "/api/events")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{base}/api/events answered 200 OK")),
            "{err}"
        );
        assert!(
            err.contains("Content-Type `text/html; charset=utf-8`"),
            "{err}"
        );
        assert!(err.contains("not rulehook's admin API"), "{err}");
        assert!(
            err.contains("\"<html><body>Sign in first</body></html>\\n\""),
            "{err}"
        );

        let base = answering(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"ok\": true}",
        )
        .await;
        let v = api(base)
            .call(reqwest::Method::GET, "/api/status")
            .await
            .unwrap();
        assert_eq!(v, json!({"ok": true}));
    }

    #[test]
    fn a_timeline_tells_the_story() {
        let v = json!({
            "id": "e1", "source": "ipfabric", "kind": "ipfabric", "received_at": "2026-01-01T00:00:00Z",
            "status": "failed", "delivery_id": "abc", "duplicates": 1, "children": [],
            "matches": [{"id": "e1:r", "rulebook": "b", "rule": "r", "status": "failed", "error": "exit code 2",
                "attempts": [{"run_id": "e1:r:0", "attempt": 1, "phase": "main", "action_index": 0,
                    "action": "run_script", "status": "failed", "duration": "1.2s", "exit_code": 2,
                    "stdout": "", "stderr": "boom\nline 2", "error": "exit code 2"},
                  {"run_id": "e1:r:on_failure:0", "attempt": 1, "phase": "on_failure", "action_index": 0,
                    "action": "open_ticket", "status": "ok", "duration": "80ms", "http_status": 201,
                    "result": {"ticket_id": "12"}}]}],
            "throttled": [{"rulebook": "b", "rule": "t", "group": "g", "until": "2026-01-01T00:10:00Z", "fired_by": "e0"}],
            "not_matched": [{"rulebook": "b", "rule": "x", "why": ["`$.a == 1` is false ($.a is 2)"]}],
            "body": {"a": 2}
        });
        let t = timeline(&v);
        for want in [
            "event e1  source ipfabric (ipfabric)  received 2026-01-01T00:00:00Z  status failed",
            "  delivery abc, 1 duplicate(s)",
            "matched b/r  job e1:r  failed: exit code 2",
            "  #0 run_script  attempt 1  failed in 1.2s  exit 2  run e1:r:0",
            "      stderr  boom",
            "              line 2",
            "  on_failure #0 open_ticket  attempt 1  ok in 80ms  HTTP 201  run e1:r:on_failure:0",
            "      result  {\"ticket_id\":\"12\"}",
            "throttled b/t  group g  until 2026-01-01T00:10:00Z  (fired by event e0)",
            "no match b/x",
            "  `$.a == 1` is false ($.a is 2)",
            "    \"a\": 2",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(!t.contains("stdout"), "{t}");
    }

    #[test]
    fn queries_skip_unset_filters_and_encode() {
        assert_eq!(
            query(&[("source", Some("a b".into())), ("status", None)]),
            "?source=a+b"
        );
        assert_eq!(query(&[("x", None)]), "");
    }
    #[test]
    fn a_job_line_says_what_fits_its_state() {
        let job = |status: &str, index: u32, attempts: u32, error: Value| {
            json!({"id": "e:r", "status": status, "rulebook": "b", "rule": "r",
                   "action_index": index, "attempts": attempts, "error": error,
                   "updated_at": "2026-12-06T10:00:00Z"})
        };
        let done = job_line(&job("done", 2, 0, Value::Null));
        assert!(!done.contains("attempt"), "{done}");
        assert!(done.ends_with("finished 2026-12-06T10:00:00Z"), "{done}");
        let failed = job_line(&job("failed", 1, 3, json!("exit 2")));
        assert!(
            failed.ends_with("stopped at action 1 after 3 attempt(s): exit 2"),
            "{failed}"
        );
        let pending = job_line(&job("pending", 0, 0, Value::Null));
        assert!(pending.ends_with("next: action 0"), "{pending}");
    }

    /// The counts stand under MATCHED and THROTTLED, right-aligned like their headers.
    #[test]
    fn event_rows_keep_the_header_columns() {
        let row = event_row(&json!({
            "received_at": "2026-12-07T14:12:03.201Z", "id": "01a250d8-ec01-766a-b1c1-dc6bb9dec948",
            "source": "eem", "status": "done", "matched_rules": 1, "throttled": 0,
        }));
        let header = format!(
            "{:<24}  {:<36}  {:<14}  {:<9}  {:>7}  {:>9}",
            "RECEIVED", "ID", "SOURCE", "STATUS", "MATCHED", "THROTTLED"
        );
        assert_eq!(row.len(), header.len(), "{row}\n{header}");
        assert!(row.ends_with("        1          0"), "{row}");
    }

    /// A pending event whose job waits for a person says so after its columns.
    #[test]
    fn an_event_row_says_it_awaits_approval() {
        let mut e = json!({
            "received_at": "2026-12-07T14:12:03.201Z", "id": "01a250d8-ec01-766a-b1c1-dc6bb9dec948",
            "source": "eem", "status": "pending", "matched_rules": 1, "throttled": 0,
            "awaiting_approval": 1,
        });
        let row = event_row(&e);
        assert!(
            row.ends_with("        1          0  awaiting approval"),
            "{row}"
        );
        e["awaiting_approval"] = json!(2);
        assert!(event_row(&e).ends_with("  2 jobs awaiting approval"));
        e["awaiting_approval"] = json!(0);
        assert!(event_row(&e).ends_with("        1          0"));
    }

    #[test]
    fn an_http_answer_is_labelled_response_and_a_script_output_stdout() {
        let v = json!({"id": "e", "matches": [{"rulebook": "b", "rule": "r", "id": "e:r",
        "status": "done", "attempts": [
            {"action_index": 0, "action": "http_request", "attempt": 1, "status": "ok",
             "http_status": 201, "stdout": "{\"id\": 7}", "run_id": "e:r:0"},
            {"action_index": 1, "action": "run_script", "attempt": 1, "status": "ok",
             "exit_code": 0, "stdout": "done", "run_id": "e:r:1"}
        ]}]});
        let t = timeline(&v);
        assert!(t.contains("response {\"id\": 7}"), "{t}");
        assert!(!t.contains("stdout  {\"id\""), "{t}");
        assert!(t.contains("stdout  done"), "{t}");
    }
}
