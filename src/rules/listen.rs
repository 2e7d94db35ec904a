//! Compiles a source that listens on its own sockets (`kind: syslog`): its `listen:` addresses,
//! `keep`, and stream limits. Kept apart from `load` so each transport's settings are read in
//! one place.

use std::sync::Arc;

use crate::body::BodyFormat;
use crate::rulebook::compile::Compile;
use crate::rulebook::model::{ListenSpec, SizeSpec, SourceSpec};
use crate::sources::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE, Endpoint, Keep, Listening,
    Scheme, Source, SourceKind, SourceMeter,
};
use crate::units::parse_size;
use crate::verify::Verifier;

/// The schemes each transport kind listens with.
fn schemes(kind: SourceKind) -> &'static [Scheme] {
    match kind {
        SourceKind::Syslog => &[Scheme::Udp, Scheme::Tcp, Scheme::Relp],
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
    let Some(listen) = &spec.listen else {
        cx.err(
            &spec.kind.referenced,
            format!(
                "source `{name}` of kind `{}` needs `listen:` (e.g. udp://0.0.0.0:514)",
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
    if endpoints.is_empty() {
        return None;
    }
    let keep = match spec.keep.as_ref().map(|k| (k, k.value.as_str())) {
        None | Some((_, "matched")) => Keep::Matched,
        Some((_, "all")) => Keep::All,
        Some((k, other)) => {
            cx.err(
                &k.referenced,
                format!("keep `{other}`: expected `matched` or `all`"),
            );
            return None;
        }
    };
    let max_message = match &spec.max_message {
        None => DEFAULT_MAX_MESSAGE,
        Some(m) => {
            let n = match &m.value {
                SizeSpec::Bytes(n) => Ok(*n),
                SizeSpec::Text(t) => parse_size(t),
            };
            match n.map(usize::try_from) {
                Ok(Ok(n)) if (480..=16 << 20).contains(&n) => n,
                Ok(_) => {
                    cx.err(&m.referenced, "max_message: between 480 bytes and 16 MiB");
                    return None;
                }
                Err(msg) => {
                    cx.err(&m.referenced, format!("max_message: {msg}"));
                    return None;
                }
            }
        }
    };
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
    for (field, given) in [
        ("path", spec.path.is_some()),
        ("secret", spec.secret.is_some() || spec.secrets.is_some()),
        ("format", spec.format.is_some()),
        ("max_body", spec.max_body.is_some()),
    ] {
        if given {
            cx.err(
                &spec.kind.referenced,
                format!(
                    "source `{name}` of kind `{}` does not take `{field}`",
                    kind.name()
                ),
            );
            return None;
        }
    }
    let mut allow_from = Vec::new();
    for a in spec.allow_from.iter().flatten() {
        let text = a.value.trim();
        match text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(n) => allow_from.push(n),
            Err(_) => cx.err(
                &a.referenced,
                format!("allow_from: `{text}` is not an address or CIDR"),
            ),
        }
    }
    Some(Source {
        name: name.clone(),
        kind,
        path: None,
        verifier: Verifier::None,
        format: BodyFormat::Json,
        max_body: max_message,
        allow_from,
        dedup_window: None,
        rate_limit: None,
        meter: SourceMeter::new(&name),
        rulebook: rulebook.to_string(),
        listening: Some(Arc::new(Listening {
            endpoints,
            keep,
            max_message,
            max_connections,
            idle_timeout,
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
}
