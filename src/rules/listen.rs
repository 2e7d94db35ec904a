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
    SourceMeter,
};
use crate::units::parse_size;
use crate::verify::Verifier;

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

/// A `syslog` (or other listening) source, or `None` after reporting its errors.
pub fn source(cx: &mut Compile, spec: &SourceSpec, rulebook: &str) -> Option<Source> {
    let name = spec.name.value.clone();
    let kind = SourceKind::of(&spec.kind.value);
    if kind == SourceKind::Mqtt {
        return mqtt(cx, spec, rulebook);
    }
    if kind == SourceKind::Nats {
        return nats(cx, spec, rulebook);
    }
    let snmp = match kind {
        SourceKind::SnmpTrap => Some(Arc::new(crate::verify::snmp_trap::SnmpTrap::compile(
            cx, spec,
        )?)),
        _ => None,
    };
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
    let endpoints = listen_endpoints(cx, spec, kind)?;
    let wants_tls = endpoints.iter().any(|e| e.scheme == Scheme::Tls);
    let tls = listen_tls(cx, spec, wants_tls)?;
    let keep = keep(cx, spec, Keep::Matched)?;
    let max_message = max_message(cx, spec)?;
    let max_connections = spec
        .max_connections
        .as_ref()
        .map(|m| m.value)
        .unwrap_or(DEFAULT_MAX_CONNECTIONS)
        .max(1);
    let idle_timeout = match &spec.idle_timeout {
        None => DEFAULT_IDLE_TIMEOUT,
        Some(t) => cx.duration(t, "idle_timeout")?,
    };
    refuse_webhook_fields(cx, spec, kind)?;
    let allow_from = super::load::allow_from(cx, spec);
    // Only informs carry what a repeat is recognised by (syslog has no delivery id).
    let dedup_window = super::load::dedup_window(cx, spec)?;
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
            idle_timeout,
            tls,
        })),
    })
}

/// The `listen:` addresses of a listening source, each with a scheme its kind serves.
fn listen_endpoints(
    cx: &mut Compile,
    spec: &SourceSpec,
    kind: SourceKind,
) -> Option<Vec<Endpoint>> {
    let Some(listen) = &spec.listen else {
        cx.err(
            &spec.kind.referenced,
            format!(
                "source `{}` of kind `{}` needs `listen:` (e.g. udp://0.0.0.0:514)",
                spec.name.value,
                kind.name()
            ),
        );
        return None;
    };
    let texts: Vec<&String> = match &listen.value {
        ListenSpec::One(t) => vec![t],
        ListenSpec::Many(v) => v.iter().collect(),
    };
    let mut endpoints = Vec::new();
    for t in texts {
        match endpoint(t.trim(), schemes(kind)) {
            Ok(e) => endpoints.push(e),
            Err(m) => cx.err(&listen.referenced, format!("listen: {m}")),
        }
    }
    (!endpoints.is_empty()).then_some(endpoints)
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

/// Settings of webhook sources (and of SNMP for other kinds) given to a listening source: an
/// error naming the first.
fn refuse_webhook_fields(cx: &mut Compile, spec: &SourceSpec, kind: SourceKind) -> Option<()> {
    let not_snmp = kind != SourceKind::SnmpTrap;
    for (field, given) in [
        ("path", spec.path.is_some()),
        ("secret", spec.secret.is_some() || spec.secrets.is_some()),
        ("format", spec.format.is_some()),
        ("max_body", spec.max_body.is_some()),
        ("communities", spec.communities.is_some() && not_snmp),
        ("users", spec.users.is_some() && not_snmp),
        ("engine_id", spec.engine_id.is_some() && not_snmp),
        ("dedup_window", spec.dedup_window.is_some() && not_snmp),
    ] {
        if given {
            cx.err(
                &spec.kind.referenced,
                format!(
                    "source `{}` of kind `{}` does not take `{field}`",
                    spec.name.value,
                    kind.name()
                ),
            );
            return None;
        }
    }
    Some(())
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
    if t.value.ca.is_some() {
        cx.err(
            &t.referenced,
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
        cx.err(&t.referenced, format!("tls: {e}"));
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
    if t.value.cert.is_some() || t.value.key.is_some() || t.value.client_ca.is_some() {
        cx.err(
            &t.referenced,
            "tls: an mqtts:// source takes `ca` (the CA that signed the broker's certificate)",
        );
        return None;
    }
    let ca = tls_path(cx, &t.value.ca, "tls.ca")?;
    if let Err(e) = crate::tls::client_config(ca.as_deref()) {
        cx.err(&t.referenced, format!("tls: {e}"));
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
    let Some(url) = &spec.url else {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}` of kind `nats` needs `url:` (e.g. nats://127.0.0.1:4222)"),
        );
        return None;
    };
    let url_text = cx.expand(url, "url")?;
    if !url_text.starts_with("nats://") && !url_text.starts_with("tls://") {
        cx.err(
            &url.referenced,
            format!("url: `{url_text}`: expected nats://HOST:PORT"),
        );
        return None;
    }
    let subjects: Vec<String> = spec
        .subjects
        .iter()
        .flatten()
        .map(|t| t.value.trim().to_string())
        .collect();
    if subjects.is_empty() || subjects.iter().any(|s| s.is_empty() || s.contains(' ')) {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}` of kind `nats` needs `subjects:` (e.g. [\"telemetry.>\"])"),
        );
        return None;
    }
    let stream = spec.stream.as_ref().map(|s| s.value.clone());
    let durable = spec.durable.as_ref().map(|s| s.value.clone());
    if stream.is_some() && subjects.len() > 1 {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}`: with `stream`, `subjects` is one filter subject"),
        );
        return None;
    }
    if stream.is_some() != durable.is_some() {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}`: `stream` and `durable` go together (a JetStream consumer)"),
        );
        return None;
    }
    let format = format(cx, spec)?;
    let keep = keep(cx, spec, Keep::All)?;
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
    let Some(url) = &spec.url else {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}` of kind `mqtt` needs `url:` (e.g. mqtt://127.0.0.1:1883)"),
        );
        return None;
    };
    let url_text = cx.expand(url, "url")?;
    let parsed = match mqtt_url(url_text.trim()) {
        Ok(x) => x,
        Err(m) => {
            cx.err(&url.referenced, format!("url: {m}"));
            return None;
        }
    };
    let topics: Vec<String> = spec
        .topics
        .iter()
        .flatten()
        .map(|t| t.value.trim().to_string())
        .collect();
    if topics.is_empty() || topics.iter().any(String::is_empty) {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}` of kind `mqtt` needs `topics:` (e.g. [\"netops/#\"])"),
        );
        return None;
    }
    let format = format(cx, spec)?;
    let username = match &spec.username {
        Some(u) => Some(cx.expand(u, "username")?),
        None => None,
    };
    let password = match &spec.password {
        Some(p) => Some(cx.secret(p, "password")?),
        None => None,
    };
    let client_id = spec
        .client_id
        .as_ref()
        .map(|c| c.value.clone())
        .unwrap_or_else(|| format!("rulehook-{name}"));
    let tls = broker_tls(cx, spec, parsed.tls)?;
    let share_group = match &spec.share_group {
        None => None,
        Some(g) => {
            let g = g.value.trim();
            if g.is_empty() || g.contains(['/', '+', '#']) {
                cx.err(
                    &spec.kind.referenced,
                    format!("share_group `{g}`: a name without `/`, `+` or `#`"),
                );
                return None;
            }
            Some(g.to_string())
        }
    };
    let keep = keep(cx, spec, Keep::All)?;
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
