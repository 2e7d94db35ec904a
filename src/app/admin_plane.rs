//! The admin plane's gate: one middleware in front of the admin API, `/metrics` and the console
//! (every route but `/healthz` and the source paths), run before any handler.
//!
//! It exists because loopback clients are admin without a token, so the operator's own browser
//! is an admin client that any web page it opens can aim at:
//!
//! - **DNS rebinding**: a page under `rebind.evil.test`, whose name then resolves to 127.0.0.1,
//!   is same-origin with the service as far as the browser knows. Only expected `Host` names are
//!   served ([`AdminHosts`]); any other gets `421 Misdirected Request`.
//! - **Cross-site requests**: a page elsewhere submits a form or sends a `no-cors` fetch. A
//!   state-changing request (any method but `GET`, `HEAD`, `OPTIONS`) whose `Sec-Fetch-Site` or
//!   `Origin` says it comes from another site is refused (`403 cross_site`). Clients that are
//!   not browsers (the CLI, curl, scripts) send neither header and pass.
//!
//! Who may act at all (loopback, the token, the session cookie) is decided afterwards, by the
//! handlers' `Admin` and `Viewer` extractors.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// The `Host` names the admin plane answers to: `localhost`, loopback addresses, the address
/// the service listens on (any address of this host when it listens on all of them), and the
/// names given with `--admin-host`. An IP address cannot be rebound, so an address the service
/// listens on is always safe; a name is safe only if the operator says it is theirs.
#[derive(Debug, Clone, Default)]
pub struct AdminHosts {
    /// The listen address; `None` in tests that build the router without a listener.
    listen: Option<IpAddr>,
    /// `--admin-host` names, lower case, without a trailing dot.
    names: Vec<String>,
}

impl AdminHosts {
    /// The hosts for a service listening on `listen`, plus `names` (`--admin-host`).
    pub fn new(listen: SocketAddr, names: &[String]) -> AdminHosts {
        AdminHosts {
            listen: Some(listen.ip()),
            names: names.iter().map(|n| normalize(n)).collect(),
        }
    }

    /// Whether the admin plane answers a request for `host` (a `Host` header or an HTTP/2
    /// authority, with or without a port).
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        let name = normalize(name);
        if name == "localhost" {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            let ip = canonical(ip);
            return ip.is_loopback()
                || self
                    .listen
                    .is_some_and(|l| l.is_unspecified() || canonical(l) == ip);
        }
        self.names.contains(&name)
    }
}

/// Checks an `--admin-host` value: a DNS name or an address, without scheme, path or port.
pub fn parse_admin_host(s: &str) -> Result<String, String> {
    let n = normalize(s.trim());
    let ok = !n.is_empty()
        && n.len() <= 253
        && (n.parse::<IpAddr>().is_ok()
            || n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if ok {
        Ok(n)
    } else {
        Err(format!(
            "`{s}` is not a host name: give a name such as rulehook.example.net (no scheme, port or path)"
        ))
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The name or address of a `host[:port]` or `[v6]:port` authority.
fn host_name(authority: &str) -> Option<&str> {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        return (after.is_empty() || after.starts_with(':')).then_some(inside);
    }
    let name = match a.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((h, _)) if h.contains(':') => a,
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return None,
        None => a,
    };
    (!name.is_empty()).then_some(name)
}

/// The hosts a request names: its `Host` header and, over HTTP/2, its authority.
fn named_hosts<'r>(headers: &'r HeaderMap, authority: Option<&'r str>) -> Vec<&'r str> {
    let mut hosts: Vec<&str> = headers
        .get_all(header::HOST)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .collect();
    hosts.extend(authority);
    hosts
}

/// `Ok` when the request may go on to the admin plane's handlers.
pub fn check(
    hosts: &AdminHosts,
    method: &Method,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Result<(), ApiError> {
    // No Host at all (HTTP/1.0 tools) is not a browser, so not a rebinding.
    for host in named_hosts(headers, authority) {
        if !hosts.allows(host) {
            let shown: String = host.chars().take(100).collect();
            return Err(ApiError::MisdirectedHost(shown));
        }
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    same_origin(headers, authority)
}

/// A browser says where a request comes from (`Sec-Fetch-Site`, `Origin`); when it does, it
/// must be this origin: `Host`, or the request's authority (HTTP/2).
fn same_origin(headers: &HeaderMap, authority: Option<&str>) -> Result<(), ApiError> {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() != b"same-origin" && v.as_bytes() != b"none")
    {
        return Err(ApiError::CrossSite);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(authority);
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, h)| h);
        if host.is_none()
            || origin_host.map(str::to_ascii_lowercase) != host.map(str::to_ascii_lowercase)
        {
            return Err(ApiError::CrossSite);
        }
    }
    Ok(())
}

/// The middleware: [`check`], then the handler.
pub async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let authority = req.uri().authority().map(|a| a.as_str());
    match check(
        &state.guard.admin_hosts,
        req.method(),
        req.headers(),
        authority,
    ) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::info!(method = %req.method(), path = %req.uri().path(), reason = e.code(), "admin plane: refused: {e}");
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn only_expected_hosts_are_served() {
        let local = AdminHosts::new("127.0.0.1:8080".parse().unwrap(), &[]);
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.",
            "127.0.0.1:8080",
            "127.8.9.1",
            "[::1]:8080",
            "::1",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(local.allows(ok), "{ok}");
        }
        for bad in [
            "rebind.evil.test",
            "rebind.evil.test:8080",
            "10.0.0.5:8080",
            "localhost.evil.test",
            "",
            "localhost:80x",
            "[::1",
        ] {
            assert!(!local.allows(bad), "{bad}");
        }
        let named = AdminHosts::new(
            "10.0.0.5:8080".parse().unwrap(),
            &["Ops.Example.NET".into()],
        );
        assert!(named.allows("10.0.0.5:8080"), "the listen address");
        assert!(named.allows("ops.example.net:8080"), "a configured name");
        assert!(!named.allows("10.0.0.6"));
        let all = AdminHosts::new("0.0.0.0:8080".parse().unwrap(), &[]);
        assert!(all.allows("192.168.1.20:8080"), "any address of this host");
        assert!(!all.allows("rebind.evil.test"), "but no name");
    }

    #[test]
    fn admin_host_values_are_checked() {
        assert_eq!(
            parse_admin_host("Ops.Example.net."),
            Ok("ops.example.net".into())
        );
        assert!(parse_admin_host("::1").is_ok());
        for bad in ["", "http://x", "x:8080", "a b", "x/y"] {
            assert!(parse_admin_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cross_site_changes_are_refused_and_reads_pass() {
        let hosts = AdminHosts::default();
        let host = ("host", "127.0.0.1:8080");
        let post = |pairs: &[(&'static str, &'static str)]| {
            check(&hosts, &Method::POST, &h(pairs), None).map_err(|e| e.code())
        };
        assert_eq!(post(&[host]), Ok(()), "no browser headers: the CLI");
        assert_eq!(post(&[host, ("origin", "http://127.0.0.1:8080")]), Ok(()));
        assert_eq!(post(&[host, ("sec-fetch-site", "same-origin")]), Ok(()));
        assert_eq!(post(&[host, ("sec-fetch-site", "none")]), Ok(()));
        for forged in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1:8081"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            assert_eq!(post(&[host, forged]), Err("cross_site"), "{forged:?}");
        }
        let get = check(
            &hosts,
            &Method::GET,
            &h(&[host, ("sec-fetch-site", "cross-site")]),
            None,
        );
        assert!(get.is_ok(), "reads change nothing");
        let rebound = check(
            &hosts,
            &Method::GET,
            &h(&[("host", "rebind.evil.test")]),
            None,
        );
        assert_eq!(rebound.map_err(|e| e.code()), Err("misdirected_host"));
        let h2 = check(
            &hosts,
            &Method::GET,
            &HeaderMap::new(),
            Some("evil.test:443"),
        );
        assert_eq!(
            h2.map_err(|e| e.code()),
            Err("misdirected_host"),
            "HTTP/2 authority"
        );
    }
}
