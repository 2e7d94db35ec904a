//! Compiles a source that listens on its own sockets (`kind: syslog`): its `listen:` addresses,
//! `keep`, and stream limits. Kept apart from `load` so each transport's settings are read in
//! one place.

use std::sync::Arc;

use crate::body::BodyFormat;
use crate::rulebook::compile::Compile;
use crate::rulebook::model::{ListenSpec, SizeSpec, SourceSpec};
use crate::sources::{
    Broker, BrokerTls, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE,
    Endpoint, Keep, ListenTls, Listening, NatsSubscription, Scheme, Source, SourceKind,
    SourceMeter, default_per_client,
};
use crate::units::parse_size;
use crate::verify::Verifier;
use serde_saphyr::Location;

/// The schemes each transport kind listens with.
fn schemes(kind: SourceKind) -> &'static [Scheme] {
    match kind {
        SourceKind::Syslog => &[Scheme::Udp, Scheme::Tcp, Scheme::Tls, Scheme::Relp],
        SourceKind::SnmpTrap => &[Scheme::Udp],
        _ => &[],
    }
}

/// Parses `udp://0.0.0.0:514` (or `tcp://[::1]:1514`).
pub fn endpoint(text: &str, allowed: &[Scheme]) -> Result<Endpoint, String> {
    let (scheme, addr) = text.split_once("://").ok_or_else(|| {
        format!("`{text}`: expected SCHEME://ADDRESS:PORT, e.g. udp://0.0.0.0:514")
    })?;
    let scheme = allowed
        .iter()
        .copied()
        .find(|s| s.as_str() == scheme)
        .ok_or_else(|| {
            format!(
                "`{text}`: scheme `{scheme}` is not one of: {}",
                allowed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let addr = addr
        .parse()
        .map_err(|_| format!("`{text}`: `{addr}` is not an IP address and port"))?;
    Ok(Endpoint { scheme, addr })
}

/// A `syslog` (or other listening) source, or `None` after reporting its errors (every one of
/// them: a wrong key does not hide a wrong value).
pub fn source(cx: &mut Compile, spec: &SourceSpec, rulebook: &str) -> Option<Source> {
    let name = spec.name.value.clone();
    let kind = SourceKind::of(&spec.kind.value);
    let keys_ok = foreign_keys(cx, spec, kind);
    if kind == SourceKind::Mqtt {
        return mqtt(cx, spec, rulebook).filter(|_| keys_ok);
    }
    if kind == SourceKind::Nats {
        return nats(cx, spec, rulebook).filter(|_| keys_ok);
    }
    if kind != SourceKind::Syslog && kind != SourceKind::SnmpTrap {
        cx.err(
            &spec.kind.referenced,
            format!(
                "source `{name}`: kind `{}` is not served by this release (syslog is; see docs/sources.md)",
                kind.name()
            ),
        );
        return None;
    }
    let snmp = match kind {
        SourceKind::SnmpTrap => {
            crate::verify::snmp_trap::SnmpTrap::compile(cx, spec).map(|s| Some(Arc::new(s)))
        }
        _ => Some(None),
    };
    let endpoints = listen_endpoints(cx, spec, kind);
    let wants_tls = listen_texts(spec)
        .iter()
        .any(|t| t.trim().starts_with("tls://"));
    let tls = match kind {
        SourceKind::Syslog => listen_tls(cx, spec, wants_tls),
        _ => Some(None),
    };
    let keep = keep(cx, spec, Keep::Matched);
    let max_message = max_message(cx, spec);
    let max_connections = match &spec.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(m) if m.value == 0 => {
            // Raised to 1 before: a listener that takes one connection is not what 0 says.
            cx.err(
                &m.referenced,
                "max_connections: at least 1 (connections open at once per listener); 0 would take none",
            );
            1
        }
        Some(m) => m.value,
    };
    let per_client = per_client(cx, spec, max_connections);
    let idle_timeout = match &spec.idle_timeout {
        None => Some(DEFAULT_IDLE_TIMEOUT),
        Some(t) => cx.duration(t, "idle_timeout"),
    };
    let errors = cx.errors.len();
    let allow_from = super::load::allow_from(cx, spec);
    let allow_ok = cx.errors.len() == errors;
    // Only informs carry what a repeat is recognised by (syslog has no delivery id).
    let dedup_window = super::load::dedup_window(cx, spec);
    let (snmp, endpoints, tls, keep) = (snmp?, endpoints?, tls?, keep?);
    let dedup_window = dedup_window?;
    let (max_message, idle_timeout, per_client) = (max_message?, idle_timeout?, per_client?);
    if !(keys_ok && allow_ok) {
        return None;
    }
    Some(Source {
        name: name.clone(),
        kind,
        path: None,
        verifier: Verifier::None,
        format: BodyFormat::Json,
        max_body: max_message,
        allow_from,
        dedup_window,
        rate_limit: None,
        meter: SourceMeter::new(&name),
        rulebook: rulebook.to_string(),
        listening: Some(Arc::new(Listening {
            endpoints,
            broker: None,
            nats: None,
            snmp,
            format: BodyFormat::Json,
            keep,
            max_message,
            max_connections,
            max_connections_per_client: per_client,
            idle_timeout,
            tls,
        })),
    })
}

/// The texts of `listen:` (none when absent).
fn listen_texts(spec: &SourceSpec) -> Vec<&String> {
    match spec.listen.as_ref().map(|l| &l.value) {
        None => Vec::new(),
        Some(ListenSpec::One(t)) => vec![t],
        Some(ListenSpec::Many(v)) => v.iter().collect(),
    }
}

/// The `listen:` addresses of a listening source, each with a scheme its kind serves; at least
/// one (an empty list is an error, not a source that silently listens nowhere).
fn listen_endpoints(
    cx: &mut Compile,
    spec: &SourceSpec,
    kind: SourceKind,
) -> Option<Vec<Endpoint>> {
    let needs = |cx: &mut Compile, at| {
        cx.err(
            at,
            format!(
                "source `{}` of kind `{}` needs at least one `listen:` address (e.g. udp://0.0.0.0:514)",
                spec.name.value,
                kind.name()
            ),
        );
    };
    let Some(listen) = &spec.listen else {
        needs(cx, &spec.kind.referenced);
        return None;
    };
    let texts = listen_texts(spec);
    if texts.is_empty() {
        needs(cx, &listen.referenced);
        return None;
    }
    let mut endpoints = Vec::new();
    let mut ok = true;
    for t in texts {
        match endpoint(t.trim(), schemes(kind)) {
            Ok(e) => endpoints.push(e),
            Err(m) => {
                cx.err(&listen.referenced, format!("listen: {m}"));
                ok = false;
            }
        }
    }
    ok.then_some(endpoints)
}

/// `max_connections_per_client:` between 1 and `max_connections` (the source's cap, given or
/// not); absent: [`default_per_client`].
fn per_client(cx: &mut Compile, spec: &SourceSpec, max_connections: usize) -> Option<usize> {
    let Some(n) = &spec.max_connections_per_client else {
        return Some(default_per_client(max_connections));
    };
    if (1..=max_connections).contains(&n.value) {
        return Some(n.value);
    }
    cx.err(
        &n.referenced,
        format!(
            "max_connections_per_client: between 1 and the source's max_connections ({max_connections}); {} is not",
            n.value
        ),
    );
    None
}

/// `max_message:` in bytes, between 480 bytes and 16 MiB (64 KiB when absent).
fn max_message(cx: &mut Compile, spec: &SourceSpec) -> Option<usize> {
    let Some(m) = &spec.max_message else {
        return Some(DEFAULT_MAX_MESSAGE);
    };
    let n = match &m.value {
        SizeSpec::Bytes(n) => Ok(*n),
        SizeSpec::Text(t) => parse_size(t),
    };
    match n.map(usize::try_from) {
        Ok(Ok(n)) if (480..=16 << 20).contains(&n) => Some(n),
        Ok(_) => {
            cx.err(&m.referenced, "max_message: between 480 bytes and 16 MiB");
            None
        }
        Err(msg) => {
            cx.err(&m.referenced, format!("max_message: {msg}"));
            None
        }
    }
}

/// The keys a listening kind takes besides `name`, `kind` and `summary`.
fn takes(kind: SourceKind, key: &str) -> bool {
    match kind {
        SourceKind::Syslog => matches!(
            key,
            "listen"
                | "keep"
                | "max_message"
                | "max_connections"
                | "max_connections_per_client"
                | "idle_timeout"
                | "tls"
                | "allow_from"
        ),
        SourceKind::SnmpTrap => matches!(
            key,
            "listen"
                | "keep"
                | "max_message"
                | "allow_from"
                | "communities"
                | "users"
                | "engine_id"
                | "dedup_window"
        ),
        SourceKind::Mqtt => matches!(
            key,
            "url"
                | "topics"
                | "client_id"
                | "username"
                | "password"
                | "format"
                | "keep"
                | "tls"
                | "share_group"
        ),
        SourceKind::Nats => matches!(
            key,
            "url" | "subjects" | "stream" | "durable" | "format" | "keep"
        ),
        SourceKind::Webhook | SourceKind::Internal => false,
    }
}

/// Every key a source entry may have besides `name`, `kind` and `summary`, with where it is
/// written (a list's first item; an empty list: the source's `kind`).
pub(super) fn given_keys(spec: &SourceSpec) -> Vec<(&'static str, Location)> {
    fn one<T>(v: &Option<crate::rulebook::model::S<T>>) -> Option<Location> {
        v.as_ref().map(|s| s.referenced)
    }
    let at = spec.kind.referenced;
    let list = |v: &Option<Vec<crate::rulebook::model::S<String>>>| {
        v.as_ref()
            .map(|l| l.first().map(|s| s.referenced).unwrap_or(at))
    };
    let users = spec
        .users
        .as_ref()
        .map(|l| l.first().map(|s| s.referenced).unwrap_or(at));
    [
        ("path", one(&spec.path)),
        ("format", one(&spec.format)),
        ("secret", one(&spec.secret)),
        ("secrets", list(&spec.secrets)),
        ("username", one(&spec.username)),
        ("password", one(&spec.password)),
        ("header", one(&spec.header)),
        ("algorithm", one(&spec.algorithm)),
        ("encoding", one(&spec.encoding)),
        ("prefix", one(&spec.prefix)),
        ("id_header", one(&spec.id_header)),
        ("tolerance", one(&spec.tolerance)),
        ("dedup_window", one(&spec.dedup_window)),
        ("max_body", one(&spec.max_body)),
        ("allow_from", list(&spec.allow_from)),
        ("rate_limit", one(&spec.rate_limit)),
        ("listen", one(&spec.listen)),
        ("keep", one(&spec.keep)),
        ("max_message", one(&spec.max_message)),
        ("max_connections", one(&spec.max_connections)),
        (
            "max_connections_per_client",
            one(&spec.max_connections_per_client),
        ),
        ("idle_timeout", one(&spec.idle_timeout)),
        ("url", one(&spec.url)),
        ("topics", list(&spec.topics)),
        ("client_id", one(&spec.client_id)),
        ("subjects", list(&spec.subjects)),
        ("stream", one(&spec.stream)),
        ("durable", one(&spec.durable)),
        ("tls", one(&spec.tls)),
        ("share_group", one(&spec.share_group)),
        ("communities", list(&spec.communities)),
        ("users", users),
        ("engine_id", one(&spec.engine_id)),
    ]
    .into_iter()
    .filter_map(|(k, at)| Some((k, at?)))
    .collect()
}

/// Why a key is not for this kind, after the refusal.
fn not_for(kind: SourceKind, key: &str) -> &'static str {
    match (kind, key) {
        (_, "dedup_window") => {
            " (it is a setting of webhook sources, and of snmp_trap sources for repeated informs)"
        }
        (_, "rate_limit" | "max_body" | "path" | "secret" | "secrets") => {
            " (it is a setting of webhook sources, served over HTTP)"
        }
        (SourceKind::Mqtt | SourceKind::Nats, "allow_from") => {
            " (its messages come through a broker: there is no sender address to check)"
        }
        (SourceKind::Mqtt | SourceKind::Nats, "listen") => " (it subscribes to `url:` instead)",
        (
            SourceKind::SnmpTrap,
            "max_connections" | "max_connections_per_client" | "idle_timeout" | "tls",
        ) => " (SNMP notifications come over UDP: there are no connections)",
        _ => "",
    }
}

/// Keys a listening kind would accept but not use are refused, each at its own place, so a
/// setting is never silently ignored; `false` when one was given.
fn foreign_keys(cx: &mut Compile, spec: &SourceSpec, kind: SourceKind) -> bool {
    let mut ok = true;
    for (key, at) in given_keys(spec) {
        if !takes(kind, key) {
            cx.err(
                &at,
                format!(
                    "source `{}` of kind `{}` does not take `{key}`{}",
                    spec.name.value,
                    kind.name(),
                    not_for(kind, key)
                ),
            );
            ok = false;
        }
    }
    ok
}

/// Why `src` cannot listen beside the sources already compiled (`places`: where each one's
/// `listen:` or `url:` is written): an address another source binds, or the MQTT session
/// (broker and client id) another source holds.
pub(super) fn clash(
    src: &Source,
    others: &[Source],
    places: &std::collections::HashMap<String, String>,
) -> Option<String> {
    let mine = src.listening.as_ref()?;
    for other in others {
        let Some(theirs) = &other.listening else {
            continue;
        };
        let place = places.get(&other.name).map_or("", String::as_str);
        for e in &mine.endpoints {
            if let Some(o) = theirs.endpoints.iter().find(|o| e.clashes(o)) {
                return Some(format!(
                    "source `{}`: listen: `{}://{}` is taken by source `{}`, which listens on `{}://{}` ({place}); each address can be bound once",
                    src.name,
                    e.scheme.as_str(),
                    e.addr,
                    other.name,
                    o.scheme.as_str(),
                    o.addr
                ));
            }
        }
        if let (Some(a), Some(b)) = (&mine.broker, &theirs.broker)
            && (&a.host, a.port, &a.client_id) == (&b.host, b.port, &b.client_id)
        {
            return Some(format!(
                "source `{}`: client_id `{}` on {}:{} is source `{}`'s session too ({place}); a broker keeps one session per client id, so give each source its own",
                src.name, a.client_id, a.host, a.port, other.name
            ));
        }
    }
    None
}

/// A path in a `tls:` block (`${env:…}` expanded).
fn tls_path(
    cx: &mut Compile,
    field: &Option<crate::rulebook::model::S<String>>,
    what: &str,
) -> Option<Option<std::path::PathBuf>> {
    match field {
        None => Some(None),
        Some(f) => Some(Some(std::path::PathBuf::from(cx.expand(f, what)?))),
    }
}

/// A syslog source's `tls:` block: needed by `tls://` endpoints, refused without one; the
/// files are loaded now so a bad one is a load error naming it, not a failed start.
fn listen_tls(cx: &mut Compile, spec: &SourceSpec, wants: bool) -> Option<Option<ListenTls>> {
    let name = &spec.name.value;
    let Some(t) = &spec.tls else {
        if wants {
            cx.err(
                &spec.kind.referenced,
                format!(
                    "source `{name}`: tls:// needs `tls: {{cert: …, key: …}}` (client_ca optional)"
                ),
            );
            return None;
        }
        return Some(None);
    };
    if !wants {
        cx.err(
            &t.referenced,
            format!("source `{name}`: `tls:` is for tls:// addresses in `listen:`; none is given"),
        );
        return None;
    }
    if let Some(ca) = &t.value.ca {
        cx.err(
            &ca.referenced,
            "tls: `ca` is for mqtts:// brokers; a listener takes `client_ca` (the CA of client certificates)",
        );
        return None;
    }
    let cert = tls_path(cx, &t.value.cert, "tls.cert")?;
    let key = tls_path(cx, &t.value.key, "tls.key")?;
    let client_ca = tls_path(cx, &t.value.client_ca, "tls.client_ca")?;
    let (Some(cert), Some(key)) = (cert, key) else {
        cx.err(
            &t.referenced,
            "tls: needs both `cert` and `key` (PEM files)",
        );
        return None;
    };
    if let Err(e) = crate::tls::server_config(&cert, &key, client_ca.as_deref()) {
        // At the line of the file that is wrong.
        let at = match &e {
            crate::tls::TlsError::File { path, .. } => [
                (&t.value.client_ca, client_ca.as_deref()),
                (&t.value.key, Some(key.as_path())),
                (&t.value.cert, Some(cert.as_path())),
            ]
            .into_iter()
            .find(|(_, p)| *p == Some(path.as_path()))
            .and_then(|(field, _)| field.as_ref().map(|f| f.referenced)),
            crate::tls::TlsError::Config(_) => None,
        };
        cx.err(&at.unwrap_or(t.referenced), format!("tls: {e}"));
        return None;
    }
    Some(Some(ListenTls {
        cert,
        key,
        client_ca,
    }))
}

/// An mqtt source's `tls:` block (`ca`), for `mqtts://` only.
fn broker_tls(cx: &mut Compile, spec: &SourceSpec, mqtts: bool) -> Option<Option<BrokerTls>> {
    let name = &spec.name.value;
    let Some(t) = &spec.tls else {
        return Some(mqtts.then_some(BrokerTls { ca: None }));
    };
    if !mqtts {
        cx.err(
            &t.referenced,
            format!("source `{name}`: `tls:` needs an mqtts:// url"),
        );
        return None;
    }
    let wrong = [&t.value.cert, &t.value.key, &t.value.client_ca]
        .into_iter()
        .find_map(|f| f.as_ref().map(|f| f.referenced));
    if let Some(at) = wrong {
        cx.err(
            &at,
            "tls: an mqtts:// source takes `ca` (the CA that signed the broker's certificate)",
        );
        return None;
    }
    let ca = tls_path(cx, &t.value.ca, "tls.ca")?;
    if let Err(e) = crate::tls::client_config(ca.as_deref()) {
        let at = t.value.ca.as_ref().map_or(t.referenced, |c| c.referenced);
        cx.err(&at, format!("tls: {e}"));
        return None;
    }
    Some(Some(BrokerTls { ca }))
}

/// `keep:`, or `default` when not given.
fn keep(cx: &mut Compile, spec: &SourceSpec, default: Keep) -> Option<Keep> {
    match spec.keep.as_ref().map(|k| (k, k.value.as_str())) {
        None => Some(default),
        Some((_, "matched")) => Some(Keep::Matched),
        Some((_, "all")) => Some(Keep::All),
        Some((k, other)) => {
            cx.err(
                &k.referenced,
                format!("keep `{other}`: expected `matched` or `all`"),
            );
            None
        }
    }
}

/// `format:` (json by default).
fn format(cx: &mut Compile, spec: &SourceSpec) -> Option<BodyFormat> {
    let Some(f) = &spec.format else {
        return Some(BodyFormat::Json);
    };
    let parsed = BodyFormat::parse(&f.value);
    if parsed.is_none() {
        cx.err(
            &f.referenced,
            format!(
                "format `{}`: expected one of: {}",
                f.value,
                crate::body::FORMATS.join(", ")
            ),
        );
    }
    parsed
}

/// A `kind: nats` source.
fn nats(cx: &mut Compile, spec: &SourceSpec, rulebook: &str) -> Option<Source> {
    let name = spec.name.value.clone();
    let url_text = match &spec.url {
        None => {
            cx.err(
                &spec.kind.referenced,
                format!("source `{name}` of kind `nats` needs `url:` (e.g. nats://127.0.0.1:4222)"),
            );
            None
        }
        Some(url) => cx.expand(url, "url").filter(|u| {
            let ok = u.starts_with("nats://") || u.starts_with("tls://");
            if !ok {
                cx.err(
                    &url.referenced,
                    format!("url: `{u}`: expected nats://HOST:PORT"),
                );
            }
            ok
        }),
    };
    let subjects: Vec<String> = spec
        .subjects
        .iter()
        .flatten()
        .map(|t| t.value.trim().to_string())
        .collect();
    let mut ok = true;
    if subjects.is_empty() || subjects.iter().any(|s| s.is_empty() || s.contains(' ')) {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}` of kind `nats` needs `subjects:` (e.g. [\"telemetry.>\"])"),
        );
        ok = false;
    }
    let stream = spec.stream.as_ref().map(|s| s.value.clone());
    let durable = spec.durable.as_ref().map(|s| s.value.clone());
    if stream.is_some() && subjects.len() > 1 {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}`: with `stream`, `subjects` is one filter subject"),
        );
        ok = false;
    }
    if stream.is_some() != durable.is_some() {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}`: `stream` and `durable` go together (a JetStream consumer)"),
        );
        ok = false;
    }
    let (format, keep) = (format(cx, spec), keep(cx, spec, Keep::All));
    let (url_text, format, keep) = (url_text?, format?, keep?);
    if !ok {
        return None;
    }
    Some(Source {
        name: name.clone(),
        kind: SourceKind::Nats,
        path: None,
        verifier: Verifier::None,
        format,
        max_body: crate::sources::DEFAULT_MAX_BODY,
        allow_from: Vec::new(),
        dedup_window: None,
        rate_limit: None,
        meter: SourceMeter::new(&name),
        rulebook: rulebook.to_string(),
        listening: Some(Arc::new(Listening {
            endpoints: Vec::new(),
            broker: None,
            snmp: None,
            nats: Some(NatsSubscription {
                url: url_text,
                subjects,
                stream,
                durable,
            }),
            format,
            keep,
            max_message: crate::sources::DEFAULT_MAX_BODY,
            max_connections: 1,
            max_connections_per_client: 1,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tls: None,
        })),
    })
}

/// A broker's address: `mqtt://HOST[:PORT]` (1883 by default) or `mqtts://HOST[:PORT]` (TLS,
/// 8883 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Parses an mqtt source's `url:`.
pub fn mqtt_url(url: &str) -> Result<MqttUrl, String> {
    let (rest, tls) = match url.split_once("://") {
        Some(("mqtt", rest)) => (rest, false),
        Some(("mqtts", rest)) => (rest, true),
        _ => {
            return Err(format!(
                "`{url}`: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
            ));
        }
    };
    let default_port = if tls { 8883 } else { 1883 };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) if rest.starts_with('[') && rest.ends_with(']') => (rest, default_port),
            Err(_) => return Err(format!("`{url}`: `{p}` is not a port")),
        },
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(format!(
            "`{url}`: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
        ));
    }
    Ok(MqttUrl {
        host: host.to_string(),
        port,
        tls,
    })
}

/// A `kind: mqtt` source.
fn mqtt(cx: &mut Compile, spec: &SourceSpec, rulebook: &str) -> Option<Source> {
    let name = spec.name.value.clone();
    let parsed = match &spec.url {
        None => {
            cx.err(
                &spec.kind.referenced,
                format!("source `{name}` of kind `mqtt` needs `url:` (e.g. mqtt://127.0.0.1:1883)"),
            );
            None
        }
        Some(url) => cx
            .expand(url, "url")
            .and_then(|text| match mqtt_url(text.trim()) {
                Ok(x) => Some(x),
                Err(m) => {
                    cx.err(&url.referenced, format!("url: {m}"));
                    None
                }
            }),
    };
    let topics: Vec<String> = spec
        .topics
        .iter()
        .flatten()
        .map(|t| t.value.trim().to_string())
        .collect();
    let mut ok = true;
    if topics.is_empty() || topics.iter().any(String::is_empty) {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}` of kind `mqtt` needs `topics:` (e.g. [\"netops/#\"])"),
        );
        ok = false;
    }
    let format = format(cx, spec);
    let username = match &spec.username {
        Some(u) => cx.expand(u, "username").map(Some),
        None => Some(None),
    };
    let password = match &spec.password {
        Some(p) => cx.secret(p, "password").map(Some),
        None => Some(None),
    };
    let client_id = spec
        .client_id
        .as_ref()
        .map(|c| c.value.clone())
        .unwrap_or_else(|| format!("rulehook-{name}"));
    let tls = match &parsed {
        Some(p) => broker_tls(cx, spec, p.tls),
        None => Some(None),
    };
    let share_group = match &spec.share_group {
        None => Some(None),
        Some(g) => {
            let g = g.value.trim();
            if g.is_empty() || g.contains(['/', '+', '#']) {
                cx.err(
                    &spec.kind.referenced,
                    format!("share_group `{g}`: a name without `/`, `+` or `#`"),
                );
                None
            } else {
                Some(Some(g.to_string()))
            }
        }
    };
    let keep = keep(cx, spec, Keep::All);
    let (parsed, format, username, password) = (parsed?, format?, username?, password?);
    let (tls, share_group, keep) = (tls?, share_group?, keep?);
    if !ok {
        return None;
    }
    Some(Source {
        name: name.clone(),
        kind: SourceKind::Mqtt,
        path: None,
        verifier: Verifier::None,
        format,
        max_body: crate::sources::DEFAULT_MAX_BODY,
        allow_from: Vec::new(),
        dedup_window: None,
        rate_limit: None,
        meter: SourceMeter::new(&name),
        rulebook: rulebook.to_string(),
        listening: Some(Arc::new(Listening {
            endpoints: Vec::new(),
            nats: None,
            snmp: None,
            broker: Some(Broker {
                host: parsed.host,
                port: parsed.port,
                topics,
                client_id,
                username,
                password,
                tls,
                share_group,
            }),
            format,
            keep,
            max_message: crate::sources::DEFAULT_MAX_BODY,
            max_connections: 1,
            max_connections_per_client: 1,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tls: None,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_or_say_why_not() {
        let e = endpoint("udp://127.0.0.1:514", &[Scheme::Udp, Scheme::Tcp]).unwrap();
        assert_eq!(e.scheme, Scheme::Udp);
        assert_eq!(e.addr.port(), 514);
        assert!(endpoint("tcp://[::1]:1514", &[Scheme::Tcp]).is_ok());
        let err = endpoint("http://0.0.0.0:1", &[Scheme::Udp]).unwrap_err();
        assert!(err.contains("scheme `http` is not one of: udp"), "{err}");
        assert!(endpoint("0.0.0.0:514", &[Scheme::Udp]).is_err());
        assert!(endpoint("udp://router:514", &[Scheme::Udp]).is_err());
    }

    #[test]
    fn addresses_clash_on_one_protocol_port_and_covering_ip() {
        let all = [Scheme::Udp, Scheme::Tcp, Scheme::Tls, Scheme::Relp];
        let e = |t: &str| endpoint(t, &all).unwrap();
        assert!(e("tcp://127.0.0.1:514").clashes(&e("relp://127.0.0.1:514")));
        assert!(e("tls://0.0.0.0:514").clashes(&e("tcp://127.0.0.1:514")));
        assert!(e("udp://[::]:514").clashes(&e("udp://127.0.0.1:514")));
        assert!(!e("udp://0.0.0.0:514").clashes(&e("udp://[::1]:514")));
        assert!(!e("udp://127.0.0.1:514").clashes(&e("tcp://127.0.0.1:514")));
        assert!(!e("udp://127.0.0.1:514").clashes(&e("udp://127.0.0.2:514")));
        assert!(!e("tcp://127.0.0.1:0").clashes(&e("tcp://127.0.0.1:0")));
    }

    #[test]
    fn mqtt_urls() {
        let at = |host: &str, port, tls| MqttUrl {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(
            mqtt_url("mqtt://127.0.0.1:1883").unwrap(),
            at("127.0.0.1", 1883, false)
        );
        assert_eq!(
            mqtt_url("mqtt://broker").unwrap(),
            at("broker", 1883, false)
        );
        assert_eq!(
            mqtt_url("mqtt://[::1]:1884").unwrap(),
            at("::1", 1884, false)
        );
        assert_eq!(mqtt_url("mqtts://b").unwrap(), at("b", 8883, true));
        assert_eq!(mqtt_url("mqtts://b:18883").unwrap(), at("b", 18883, true));
        assert!(mqtt_url("http://b").is_err());
        assert!(mqtt_url("mqtt://b:x").is_err());
    }
}
