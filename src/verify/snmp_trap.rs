//! `kind: snmp_trap`: who may send traps and informs. v1/v2c by community (none configured:
//! v1/v2c refused), v3 by USM user (`users:`: name, auth and privacy protocols and passwords).
//! Passwords become keys (RFC 3414 A.2) once, here, at load; the transport localizes them per
//! engine id (`transport::snmp`).

use subtle::ConstantTimeEq;

use super::usm::{AuthProtocol, PrivProtocol};
use crate::rulebook::compile::Compile;
use crate::rulebook::model::{SnmpUserSpec, SourceSpec};
use crate::secrets::Secret;

/// A `snmp_trap` source's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnmpTrap {
    communities: Vec<Secret>,
    pub users: Vec<UsmUser>,
    /// `engine_id:` (hex); else the one kept in the data directory.
    pub engine_id: Option<Vec<u8>>,
}

/// A v3 user with its password keys (Ku), not yet localized.
#[derive(Clone, PartialEq, Eq)]
pub struct UsmUser {
    pub name: String,
    pub auth: AuthProtocol,
    pub auth_ku: Vec<u8>,
    /// Privacy protocol and its password key (the auth protocol's digest of the password).
    pub privacy: Option<(PrivProtocol, Vec<u8>)>,
}

impl std::fmt::Debug for UsmUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsmUser")
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("privacy", &self.privacy.as_ref().map(|p| p.0))
            .finish()
    }
}

impl SnmpTrap {
    /// Reads `communities`, `users` and `engine_id`; `None` after reporting every error.
    pub fn compile(cx: &mut Compile, spec: &SourceSpec) -> Option<SnmpTrap> {
        let name = &spec.name.value;
        let mut ok = true;
        let mut communities = Vec::new();
        for c in spec.communities.iter().flatten() {
            match cx.secret(c, "communities") {
                Some(s) => communities.push(s),
                None => ok = false,
            }
        }
        let mut users: Vec<UsmUser> = Vec::new();
        for u in spec.users.iter().flatten() {
            let Some(user) = user(cx, &u.value) else {
                ok = false;
                continue;
            };
            if users.iter().any(|x| x.name == user.name) {
                cx.err(
                    &u.referenced,
                    format!("users: `{}` is listed twice", user.name),
                );
                ok = false;
            }
            users.push(user);
        }
        if ok && communities.is_empty() && users.is_empty() {
            cx.err(
                &spec.kind.referenced,
                format!(
                    "source `{name}` of kind `snmp_trap` needs `communities:` (v1/v2c) or `users:` (v3)"
                ),
            );
            ok = false;
        }
        let engine_id = match &spec.engine_id {
            None => None,
            Some(e) => {
                let text = e.value.trim().trim_start_matches("0x");
                match hex::decode(text) {
                    Ok(b) if (5..=32).contains(&b.len()) => Some(b),
                    _ => {
                        cx.err(
                            &e.referenced,
                            "engine_id: 5 to 32 bytes in hex (e.g. 800000000503a1b2c3d4)",
                        );
                        ok = false;
                        None
                    }
                }
            }
        };
        ok.then_some(SnmpTrap {
            communities,
            users,
            engine_id,
        })
    }

    /// Whether v1/v2c messages are taken at all.
    pub fn takes_communities(&self) -> bool {
        !self.communities.is_empty()
    }

    /// Whether `given` is one of the communities (every one compared, in constant time).
    pub fn community_ok(&self, given: &[u8]) -> bool {
        self.communities.iter().fold(false, |ok, c| {
            super::mac::secret_eq(c.expose().as_bytes(), given) | ok
        })
    }

    /// A source with only these users (unit tests of the transport).
    #[cfg(test)]
    pub fn for_tests(users: Vec<UsmUser>) -> SnmpTrap {
        SnmpTrap::new(Vec::new(), users)
    }

    /// Settings made in code rather than read from a rulebook (the fuzz target).
    pub fn new(communities: Vec<Secret>, users: Vec<UsmUser>) -> SnmpTrap {
        SnmpTrap {
            communities,
            users,
            engine_id: None,
        }
    }

    pub fn user(&self, name: &[u8]) -> Option<&UsmUser> {
        self.users
            .iter()
            .find(|u| bool::from(u.name.as_bytes().ct_eq(name)))
    }
}

/// One v3 user: every error of its values reported, not only the first.
fn user(cx: &mut Compile, spec: &SnmpUserSpec) -> Option<UsmUser> {
    let name = spec.name.value.trim().to_string();
    let mut ok = true;
    if name.is_empty() || name.len() > 32 {
        cx.err(&spec.name.referenced, "users: a name of 1 to 32 characters");
        ok = false;
    }
    let auth = AuthProtocol::parse(&spec.auth.value);
    if auth.is_none() {
        cx.err(
            &spec.auth.referenced,
            format!(
                "auth `{}`: expected one of: {}",
                spec.auth.value,
                AuthProtocol::NAMES.join(", ")
            ),
        );
    }
    let auth_password = cx.secret(&spec.auth_password, "auth_password");
    if auth_password.as_ref().is_some_and(|p| p.expose().len() < 8) {
        cx.err(
            &spec.auth_password.referenced,
            "auth_password: at least 8 characters (RFC 3414)",
        );
        ok = false;
    }
    let privacy = match (&spec.privacy, &spec.priv_password) {
        (None, None) => Some(None),
        (Some(p), Some(pw)) => {
            let proto = PrivProtocol::parse(&p.value);
            if proto.is_none() {
                cx.err(
                    &p.referenced,
                    format!(
                        "priv `{}`: expected one of: {}",
                        p.value,
                        PrivProtocol::NAMES.join(", ")
                    ),
                );
            }
            let pw = cx.secret(pw, "priv_password");
            if pw.as_ref().is_some_and(|pw| pw.expose().len() < 8) {
                cx.err(
                    &spec
                        .priv_password
                        .as_ref()
                        .map_or(spec.name.referenced, |p| p.referenced),
                    "priv_password: at least 8 characters",
                );
                ok = false;
            }
            match (proto, pw, auth) {
                (Some(proto), Some(pw), Some(auth)) => {
                    Some(Some((proto, auth.password_key(pw.expose().as_bytes()))))
                }
                _ => None,
            }
        }
        (given, _) => {
            let at = given
                .as_ref()
                .map_or(spec.name.referenced, |p| p.referenced);
            let at = spec.priv_password.as_ref().map_or(at, |p| p.referenced);
            cx.err(
                &at,
                format!("user `{name}`: `priv` and `priv_password` go together"),
            );
            None
        }
    };
    let (auth, auth_password, privacy) = (auth?, auth_password?, privacy?);
    ok.then(|| UsmUser {
        auth_ku: auth.password_key(auth_password.expose().as_bytes()),
        name,
        auth,
        privacy,
    })
}
