//! Single sign-on behind a reverse proxy: the proxy authenticates people and names them in a
//! header (`--trust-user-header X-Forwarded-User`), optionally with their groups
//! (`--trust-groups-header X-Forwarded-Groups`). It exists so a team's identity provider decides
//! who uses the console, without API tokens or passwords in rulehook.
//!
//! The header is believed only from `--trusted-proxy` addresses: from anywhere else it is
//! ignored, as if absent. The role of a named person is, in order: the role of the user of that
//! name in `users.json` (so an admin can pin roles per person); else the highest role its groups
//! map to (`--trust-group-role GROUP=ROLE`); else `--trust-default-role`; else the request is
//! refused (403), never given a role by accident.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use super::{Principal, Role, Users, valid_name};

/// The settings of the trusted-header sign-in, and whom it has already audited.
#[derive(Debug)]
pub struct TrustedHeader {
    pub user_header: HeaderName,
    pub proxies: Vec<IpNet>,
    pub groups_header: Option<HeaderName>,
    /// Group name → role.
    pub group_roles: Vec<(String, Role)>,
    pub default_role: Option<Role>,
    /// When each person (with a role) was last written to the audit trail as a sign-in.
    seen: Mutex<HashMap<(String, Role), Instant>>,
}

/// How often one person's header sign-in is audited again (every request would flood the trail).
pub const AUDIT_EVERY: Duration = Duration::from_secs(3600);

/// Why a request from a trusted proxy was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SsoError {
    #[error("the proxy's user header names `{0}`, which is not a valid user name")]
    BadName(String),
    #[error(
        "`{0}` signed in at the proxy but has no role here: add the user with `rulehook users add`, map one of its groups with --trust-group-role, or set --trust-default-role"
    )]
    NoRole(String),
}

impl TrustedHeader {
    pub fn new(
        user_header: HeaderName,
        proxies: Vec<IpNet>,
        groups_header: Option<HeaderName>,
        group_roles: Vec<(String, Role)>,
        default_role: Option<Role>,
    ) -> TrustedHeader {
        TrustedHeader {
            user_header,
            proxies,
            groups_header,
            group_roles,
            default_role,
            seen: Mutex::default(),
        }
    }

    /// Whether `peer` is one of the trusted proxies (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.proxies.iter().any(|n| n.contains(&peer))
    }

    /// Who the proxy says this is: `Ok(None)` when the request did not come from a trusted
    /// proxy or carries no user header (other credentials decide then).
    pub fn identify(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        users: Option<&Users>,
    ) -> Result<Option<Principal>, SsoError> {
        let Some(value) = headers.get(&self.user_header) else {
            return Ok(None);
        };
        if !self.trusts(peer) {
            tracing::debug!(%peer, header = %self.user_header, "user header from an untrusted address: ignored");
            return Ok(None);
        }
        let name = value.to_str().unwrap_or("").trim();
        if name.is_empty() {
            return Ok(None);
        }
        if !valid_name(name) {
            return Err(SsoError::BadName(name.chars().take(64).collect()));
        }
        let known = users.and_then(|u| match u.get(name) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("the users file cannot be read: {e}");
                None
            }
        });
        let role = known
            .map(|u| u.role)
            .or_else(|| self.group_role(headers))
            .or(self.default_role)
            .ok_or_else(|| SsoError::NoRole(name.to_string()))?;
        Ok(Some(Principal {
            name: name.to_string(),
            role,
        }))
    }

    /// The highest role the request's groups map to.
    fn group_role(&self, headers: &HeaderMap) -> Option<Role> {
        let header = self.groups_header.as_ref()?;
        headers
            .get_all(header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter_map(|g| {
                self.group_roles
                    .iter()
                    .find(|(name, _)| name == g)
                    .map(|(_, r)| *r)
            })
            .max()
    }

    /// Whether `who`'s sign-in should be audited now: the first request of this person with
    /// this role, or the first after [`AUDIT_EVERY`].
    pub fn newly_seen(&self, who: &Principal) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let key = (who.name.clone(), who.role);
        let fresh = seen
            .get(&key)
            .is_none_or(|at| now.duration_since(*at) >= AUDIT_EVERY);
        if fresh {
            if seen.len() >= 10_000 {
                seen.retain(|_, at| now.duration_since(*at) < AUDIT_EVERY);
            }
            seen.insert(key, now);
        }
        fresh
    }
}

/// `GROUP=ROLE`, for `--trust-group-role`.
pub fn parse_group_role(s: &str) -> Result<(String, Role), String> {
    let (group, role) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("`{s}`: write GROUP=ROLE, e.g. netops=operator"))?;
    let role = Role::parse(role.trim())
        .ok_or_else(|| format!("`{role}`: a role is one of {}", Role::ALL.join(", ")))?;
    let group = group.trim();
    if group.is_empty() {
        return Err(format!("`{s}`: the group name is empty"));
    }
    Ok((group.to_string(), role))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sso() -> TrustedHeader {
        TrustedHeader::new(
            HeaderName::from_static("x-forwarded-user"),
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            Some(HeaderName::from_static("x-forwarded-groups")),
            vec![
                ("netops".into(), Role::Operator),
                ("cab".into(), Role::Approver),
            ],
            None,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let s = sso();
        let h = headers(&[
            ("x-forwarded-user", "alice"),
            ("x-forwarded-groups", "netops"),
        ]);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        let who = s.identify(proxy, &h, None).unwrap().unwrap();
        assert_eq!((who.name.as_str(), who.role), ("alice", Role::Operator));
        assert!(s.identify(mapped, &h, None).unwrap().is_some());
        assert_eq!(s.identify(other, &h, None), Ok(None), "ignored elsewhere");
        assert_eq!(s.identify(proxy, &HeaderMap::new(), None), Ok(None));
    }

    #[test]
    fn roles_come_from_users_then_groups_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::in_data(dir.path());
        users.add("carol", Role::Admin).unwrap();
        let mut s = sso();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(&[
            ("x-forwarded-user", "carol"),
            ("x-forwarded-groups", "netops"),
        ]);
        let who = s.identify(proxy, &h, Some(&users)).unwrap().unwrap();
        assert_eq!(who.role, Role::Admin, "users.json wins");
        let h = headers(&[
            ("x-forwarded-user", "bob"),
            ("x-forwarded-groups", "staff, netops,cab"),
        ]);
        let who = s.identify(proxy, &h, Some(&users)).unwrap().unwrap();
        assert_eq!(who.role, Role::Approver, "the highest group");
        let h = headers(&[
            ("x-forwarded-user", "dave"),
            ("x-forwarded-groups", "staff"),
        ]);
        assert_eq!(
            s.identify(proxy, &h, Some(&users)),
            Err(SsoError::NoRole("dave".into()))
        );
        s.default_role = Some(Role::Viewer);
        let who = s.identify(proxy, &h, Some(&users)).unwrap().unwrap();
        assert_eq!(who.role, Role::Viewer);
        let h = headers(&[("x-forwarded-user", "loopback")]);
        assert!(matches!(
            s.identify(proxy, &h, None),
            Err(SsoError::BadName(_))
        ));
    }

    #[test]
    fn a_sign_in_is_audited_once_per_person_and_role() {
        let s = sso();
        let a = Principal {
            name: "alice".into(),
            role: Role::Viewer,
        };
        assert!(s.newly_seen(&a));
        assert!(!s.newly_seen(&a));
        let promoted = Principal {
            role: Role::Admin,
            ..a
        };
        assert!(s.newly_seen(&promoted));
    }

    #[test]
    fn group_roles_parse() {
        assert_eq!(
            parse_group_role("net ops=operator"),
            Ok(("net ops".into(), Role::Operator))
        );
        assert!(parse_group_role("netops").is_err());
        assert!(parse_group_role("netops=root").is_err());
    }
}
