//! A source: where one sender's webhooks come in, and how they are checked at the door.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::verify::Verifier;

/// One compiled `sources:` entry.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    /// URL path it is served on (`/hooks/<name>` unless set); internal sources have none.
    pub path: Option<String>,
    pub verifier: Verifier,
    pub max_body: usize,
    pub allow_from: Vec<IpNet>,
    /// Overrides the kind's default de-duplication window; zero disables it.
    pub dedup_window: Option<Duration>,
    /// The rulebook file that declared it.
    pub rulebook: String,
}

pub const DEFAULT_MAX_BODY: usize = 1 << 20;

impl Source {
    /// Whether a client at `ip` may post to this source.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.allow_from.is_empty() || self.allow_from.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_from_cidrs_and_mapped_addresses() {
        let s = Source {
            name: "x".into(),
            path: None,
            verifier: Verifier::None,
            max_body: 1,
            allow_from: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            dedup_window: None,
            rulebook: "r".into(),
        };
        assert!(s.allows("10.1.2.3".parse().unwrap()));
        assert!(s.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(s.allows("::1".parse().unwrap()));
        assert!(!s.allows("127.0.0.1".parse().unwrap()));
    }
}
