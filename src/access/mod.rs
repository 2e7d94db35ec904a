//! People and roles: who may read, replay and re-run, approve, and manage users.
//!
//! It exists because one admin token let whoever could look also act. Users are kept in
//! `users.json` in the data directory, each with a role and the SHA-256 of a random API token
//! (the token itself is shown once, by `rulehook users add`). `RULEHOOK_ADMIN_TOKEN` stays the
//! break-glass admin, and loopback clients stay admin unless `--admin-require-token`.

pub mod audit;
pub mod password;
pub mod sso;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a user may do; each role may do everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads events, jobs, rules and the audit trail.
    Viewer,
    /// Also replays events and re-runs jobs.
    Operator,
    /// Also approves and rejects jobs waiting for approval.
    Approver,
    /// Also manages users.
    Admin,
}

impl Role {
    pub const ALL: [&'static str; 4] = ["viewer", "operator", "approver", "admin"];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "approver" => Some(Role::Approver),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who made a request, as the audit trail names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A user's name; `admin-token` for `RULEHOOK_ADMIN_TOKEN`; `loopback` for a local client
    /// let in without a token.
    pub name: String,
    pub role: Role,
}

/// One user as stored: never the token, only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the API token.
    pub token_sha256: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// The console password's Argon2id hash (PHC string), when `users passwd` set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_argon2: Option<String>,
}

impl User {
    /// What a console session of this user is bound to: a new token or password ends it.
    pub fn credentials(&self) -> String {
        format!(
            "{}\0{}",
            self.token_sha256,
            self.password_argon2.as_deref().unwrap_or("")
        )
    }

    pub fn principal(&self) -> Principal {
        Principal {
            name: self.name.clone(),
            role: self.role,
        }
    }
}

/// Why a user change or a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid users file: {source}")]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
    #[error("user `{0}` exists already (remove it first to give it a new token)")]
    Exists(String),
    #[error("no user `{0}`")]
    NoSuchUser(String),
    #[error("{0}")]
    Password(String),
    #[error("a user name must be 1 to 64 letters, digits, `.`, `_`, `-` or `@`; `{0}` is not")]
    BadName(String),
    #[error("`{0}` is reserved: {1}; choose another name")]
    Reserved(String, &'static str),
}

/// The users file of a data directory.
#[derive(Debug, Clone)]
pub struct Users {
    path: PathBuf,
}

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    users: Vec<User>,
    /// The last changes made by `rulehook users` (oldest first, the newest [`KEEP_CHANGES`]):
    /// the command line writes the file, not the service, so the service copies these into its
    /// audit trail when it sees them (`audit::copy_user_changes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    changes: Vec<Change>,
}

/// Changes kept in the users file for the service to copy into the audit trail.
const KEEP_CHANGES: usize = 200;

/// One change of the users file by the command line: who made it, what, to whom.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    /// Counts up within one file, with `at` orders the changes.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub at: String,
    /// `cli@<host>`: the local command line.
    pub who: String,
    /// `user.add`, `user.remove`, `user.passwd`, `user.role`.
    pub what: String,
    /// The user changed.
    pub user: String,
    /// The operating-system user who ran the command, and the role given.
    pub comment: String,
}

impl UsersFile {
    /// Notes a change by the local command line.
    fn note(&mut self, what: &str, user: &str, detail: String) {
        let seq = self.changes.last().map_or(1, |c| c.seq + 1);
        let os_user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| uid());
        self.changes.push(Change {
            seq,
            at: crate::domain::rfc3339(crate::domain::now_ms()),
            who: format!("cli@{}", hostname()),
            what: what.to_string(),
            user: user.to_string(),
            comment: format!("{detail}; by the OS user {os_user} with `rulehook users`"),
        });
        if self.changes.len() > KEEP_CHANGES {
            self.changes.drain(..self.changes.len() - KEEP_CHANGES);
        }
    }
}

/// `uid N` of this process, for a change made without `$USER` (a service account, a container).
fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(|u| format!("uid {u}")))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// This host's name (for `cli@<host>`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Users {
    /// The users of the service whose data directory is `data`.
    pub fn in_data(data: &Path) -> Users {
        Users {
            path: data.join("users.json"),
        }
    }

    fn read(&self) -> Result<UsersFile, UsersError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| UsersError::Corrupt {
                path: self.path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsersFile::default()),
            Err(source) => Err(UsersError::Io {
                path: self.path.display().to_string(),
                source,
            }),
        }
    }

    /// Written whole to a temporary file, then renamed over the old one: a reader sees the old
    /// or the new list, never half of one.
    fn write(&self, file: &UsersFile) -> Result<(), UsersError> {
        let io = |source| UsersError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(file).unwrap_or_default();
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode_0600()
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&text).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    pub fn list(&self) -> Result<Vec<User>, UsersError> {
        Ok(self.read()?.users)
    }

    /// Adds a user; returns its new API token (not stored, shown once).
    pub fn add(&self, name: &str, role: Role) -> Result<String, UsersError> {
        if let Some(why) = reserved(name) {
            return Err(UsersError::Reserved(name.to_string(), why));
        }
        if !valid_name(name) {
            return Err(UsersError::BadName(name.to_string()));
        }
        let mut file = self.read()?;
        if let Some(u) = file
            .users
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(name))
        {
            return Err(UsersError::Exists(u.name.clone()));
        }
        let token = format!("rh_{}", hex::encode(rand::random::<[u8; 24]>()));
        file.users.push(User {
            name: name.to_string(),
            role,
            token_sha256: hash(&token),
            created_at: crate::domain::now_ms(),
            password_argon2: None,
        });
        file.note("user.add", name, format!("role {}", role.as_str()));
        self.write(&file)?;
        Ok(token)
    }

    pub fn remove(&self, name: &str) -> Result<User, UsersError> {
        let mut file = self.read()?;
        let at = file
            .users
            .iter()
            .position(|u| same_name(&u.name, name, &file.users))
            .ok_or_else(|| UsersError::NoSuchUser(name.to_string()))?;
        let gone = file.users.remove(at);
        let detail = format!("had role {}", gone.role.as_str());
        file.note("user.remove", &gone.name, detail);
        self.write(&file)?;
        Ok(gone)
    }

    /// Sets (or replaces) the console password of user `name`; stored as an Argon2id hash.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), UsersError> {
        let hashed = password::hash(password)?;
        let mut file = self.read()?;
        let at = file
            .users
            .iter()
            .position(|u| same_name(&u.name, name, &file.users))
            .ok_or_else(|| UsersError::NoSuchUser(name.to_string()))?;
        let user = file
            .users
            .get_mut(at)
            .ok_or_else(|| UsersError::NoSuchUser(name.to_string()))?;
        user.password_argon2 = Some(hashed);
        let name = user.name.clone();
        file.note("user.passwd", &name, "console password set".into());
        self.write(&file)
    }

    /// Gives user `name` the role `role`; returns the role it had.
    pub fn set_role(&self, name: &str, role: Role) -> Result<Role, UsersError> {
        let mut file = self.read()?;
        let at = file
            .users
            .iter()
            .position(|u| same_name(&u.name, name, &file.users))
            .ok_or_else(|| UsersError::NoSuchUser(name.to_string()))?;
        let user = &mut file.users[at];
        let was = std::mem::replace(&mut user.role, role);
        let name = user.name.clone();
        let detail = format!("role {} (was {})", role.as_str(), was.as_str());
        file.note("user.role", &name, detail);
        self.write(&file)?;
        Ok(was)
    }

    /// The changes `rulehook users` noted, oldest first.
    pub fn changes(&self) -> Result<Vec<Change>, UsersError> {
        Ok(self.read()?.changes)
    }

    /// The user `name` when `password` is theirs; `None` for an unknown name, a user without
    /// a password, or a wrong password (the hash is computed in each case, so the answer's
    /// time does not tell which). Slow on purpose (Argon2id): call it off the async threads.
    pub fn by_password(&self, name: &str, password: &str) -> Result<Option<User>, UsersError> {
        let user = self.get(name)?;
        let stored = user.as_ref().and_then(|u| u.password_argon2.as_deref());
        Ok(password::verify(password, stored).then_some(user).flatten())
    }

    /// The user named `name`.
    pub fn get(&self, name: &str) -> Result<Option<User>, UsersError> {
        let users = self.read()?.users;
        let at = users.iter().position(|u| same_name(&u.name, name, &users));
        Ok(at.map(|at| users[at].clone()))
    }

    /// The stored user whose token this is.
    pub fn user_by_token(&self, token: &str) -> Result<Option<User>, UsersError> {
        let want = hash(token);
        Ok(self
            .read()?
            .users
            .into_iter()
            .find(|u| crate::verify::mac::secret_eq(u.token_sha256.as_bytes(), want.as_bytes())))
    }

    /// The user whose token this is. Read from the file each time, so `users add` and `users
    /// remove` take effect on a running service at once.
    pub fn by_token(&self, token: &str) -> Result<Option<Principal>, UsersError> {
        let want = hash(token);
        Ok(self
            .read()?
            .users
            .into_iter()
            .find(|u| crate::verify::mac::secret_eq(u.token_sha256.as_bytes(), want.as_bytes()))
            .map(|u| Principal {
                name: u.name,
                role: u.role,
            }))
    }
}

/// Whether the stored name `stored` is the one asked for as `asked`: the same name, else the same
/// but for case when no stored name is exactly `asked` (names are unique case-insensitively;
/// a file written before that rule may hold both `Anna` and `anna`).
fn same_name(stored: &str, asked: &str, all: &[User]) -> bool {
    stored == asked || (stored.eq_ignore_ascii_case(asked) && !all.iter().any(|u| u.name == asked))
}

/// Names the service gives to principals that are not users (in decisions and the audit
/// trail), with what they stand for. A user of such a name could pass for them.
const RESERVED: [(&str, &str); 5] = [
    ("admin-token", "it names the holder of RULEHOOK_ADMIN_TOKEN"),
    ("loopback", "it names a local client let in without a token"),
    (
        "timeout",
        "it names the on_timeout decision of an approval nobody made in time",
    ),
    (
        "unknown",
        "it names a refused sign-in whose user name was not well-formed",
    ),
    (
        "cli",
        "it names the local command line (`cli@<host>`) in the audit trail",
    ),
];

/// Why `name` may not be a user's name, when it is reserved (compared case-insensitively;
/// `cli@…` is the local command line).
pub fn reserved(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("cli@") {
        return Some("it names the local command line (`cli@<host>`) in the audit trail");
    }
    RESERVED
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, why)| *why)
}

/// Warnings about the rules' `approval.approvers` that name nobody in the users file (compared
/// case-insensitively): nobody but an admin (break-glass) could decide their jobs. Checked
/// against the file as it is now, so adding the user ends the warning.
pub fn approver_warnings(set: &crate::rules::RuleSet, users: &Users) -> Vec<String> {
    let known: Vec<String> = match users.list() {
        Ok(list) => list.into_iter().map(|u| u.name).collect(),
        Err(e) => return vec![format!("approval.approvers cannot be checked: {e}")],
    };
    let mut out = Vec::new();
    for rule in &set.rules {
        let Some(approval) = &rule.approval else {
            continue;
        };
        let unknown: Vec<&str> = approval
            .approvers
            .iter()
            .filter(|a| !known.iter().any(|k| k.eq_ignore_ascii_case(a)))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            out.push(format!(
                "rule {}/{}: approval.approvers {} {} not a user (rulehook users list); only the others and admins (break-glass) can decide its jobs",
                rule.rulebook,
                rule.name,
                unknown.join(", "),
                if unknown.len() == 1 { "is" } else { "are" },
            ));
        }
    }
    out
}

/// 1 to 64 letters, digits, `.`, `_`, `-` or `@`, and not a name the service uses itself.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        && reserved(name).is_none()
}

fn hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// `OpenOptions::mode(0o600)` where there are file modes.
trait Private {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Private for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_finds_its_user_until_the_user_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::in_data(dir.path());
        let token = users.add("alice", Role::Approver).unwrap();
        let text = std::fs::read_to_string(dir.path().join("users.json")).unwrap();
        assert!(!text.contains(&token), "only the hash is stored");
        let who = users.by_token(&token).unwrap().unwrap();
        assert_eq!((who.name.as_str(), who.role), ("alice", Role::Approver));
        assert!(users.by_token("rh_wrong").unwrap().is_none());
        // A password, once set, signs the user in; a wrong one or an unknown name does not.
        assert!(
            users.by_password("alice", "pw").unwrap().is_none(),
            "none set"
        );
        let before = users.get("alice").unwrap().unwrap().credentials();
        users.set_password("alice", "correct horse").unwrap();
        let text = std::fs::read_to_string(dir.path().join("users.json")).unwrap();
        assert!(
            !text.contains("correct horse") && text.contains("$argon2id$"),
            "{text}"
        );
        let u = users
            .by_password("alice", "correct horse")
            .unwrap()
            .unwrap();
        assert_ne!(
            u.credentials(),
            before,
            "a new password ends the old sessions"
        );
        assert!(users.by_password("alice", "wrong").unwrap().is_none());
        assert!(users.by_password("bob", "correct horse").unwrap().is_none());
        assert!(matches!(
            users.set_password("bob", "long enough"),
            Err(UsersError::NoSuchUser(_))
        ));
        assert!(matches!(
            users.set_password("alice", "short"),
            Err(UsersError::Password(_))
        ));
        assert!(matches!(
            users.add("alice", Role::Viewer),
            Err(UsersError::Exists(_))
        ));
        assert!(matches!(
            users.add("bad name", Role::Viewer),
            Err(UsersError::BadName(_))
        ));
        users.remove("alice").unwrap();
        assert!(users.by_token(&token).unwrap().is_none());
        assert!(matches!(
            users.remove("alice"),
            Err(UsersError::NoSuchUser(_))
        ));
    }

    #[test]
    fn reserved_names_and_names_differing_only_in_case_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::in_data(dir.path());
        for name in [
            "timeout",
            "unknown",
            "loopback",
            "admin-token",
            "Timeout",
            "cli@host",
        ] {
            let err = users.add(name, Role::Approver).unwrap_err();
            assert!(
                matches!(err, UsersError::Reserved(..)) && err.to_string().contains("reserved"),
                "{name}: {err}"
            );
        }
        users.add("anna", Role::Approver).unwrap();
        let err = users.add("Anna", Role::Viewer).unwrap_err();
        assert!(
            matches!(err, UsersError::Exists(ref n) if n == "anna"),
            "{err}"
        );
        assert_eq!(users.get("ANNA").unwrap().unwrap().name, "anna");
        users.remove("Anna").unwrap();
        assert!(users.list().unwrap().is_empty());
    }

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(Role::Viewer < Role::Operator);
        assert!(Role::Operator < Role::Approver);
        assert!(Role::Approver < Role::Admin);
        for r in Role::ALL {
            assert_eq!(Role::parse(r).unwrap().as_str(), r);
        }
    }
}
