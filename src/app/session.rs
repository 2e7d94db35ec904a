//! The console's sessions, per-process keys (form tokens) and settings. Kept here, below the
//! console and the admin API, because [`super::AppState`] holds them and the admin API's access
//! rule reads the same session.
//!
//! A session cookie is a random id drawn at each sign-in, kept in this process's memory with who
//! it stands for: signing out forgets it (a copied cookie stops working), and sessions end at a
//! restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::verify::Algorithm;
use crate::verify::mac::sign;

/// Per-process console secrets and access settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The embedded store's directory, for the journal size on the overview.
    pub data_dir: Option<std::path::PathBuf>,
    /// With a store shared by several processes: how often live pages also read the history
    /// for events other processes accepted (this process's own come at once).
    pub poll_history: Option<std::time::Duration>,
    /// Keys the form tokens; drawn at start.
    key: [u8; 32],
    /// The sessions signed in, by cookie value.
    sessions: Arc<Mutex<Sessions>>,
}

/// Sessions held at most; past it, the oldest is ended first.
const MAX_SESSIONS: usize = 10_000;

/// The open sessions: cookie value → (order of sign-in, who).
#[derive(Debug, Default)]
struct Sessions {
    next: u64,
    open: HashMap<String, (u64, Holder)>,
}

/// Who a session cookie stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// The holder of `RULEHOOK_ADMIN_TOKEN`.
    AdminToken,
    /// A user, as long as their token and password stay what they were at sign-in
    /// ([`crate::access::User::credentials`]): a new one ends the session.
    User { name: String, credentials: String },
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: None,
            poll_history: None,
            key: rand::random(),
            sessions: Arc::default(),
        }
    }
}

impl Settings {
    /// Settings with fresh keys.
    pub fn new(data_dir: Option<std::path::PathBuf>) -> Settings {
        Settings {
            data_dir,
            ..Settings::default()
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        hex::encode(sign(Algorithm::Sha256, &self.key, parts))
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `holder`; returns its cookie value (a fresh random id).
    pub fn start_session(&self, holder: Holder) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let mut s = self.sessions();
        if s.open.len() >= MAX_SESSIONS
            && let Some(oldest) = s
                .open
                .iter()
                .min_by_key(|(_, v)| v.0)
                .map(|(k, _)| k.clone())
        {
            s.open.remove(&oldest);
        }
        let n = s.next;
        s.next += 1;
        s.open.insert(id.clone(), (n, holder));
        id
    }

    /// Who the session with cookie value `id` stands for, while it is open.
    pub fn session(&self, id: &str) -> Option<Holder> {
        self.sessions().open.get(id).map(|(_, h)| h.clone())
    }

    /// Ends the session with cookie value `id` (signing out).
    pub fn end_session(&self, id: &str) {
        self.sessions().open.remove(id);
    }

    /// The token every console form carries (shown only to people let in).
    pub fn form_token(&self) -> String {
        self.mac(&[b"form\0"])
    }

    /// The login form's token (shown to anyone; it only lets a sign-in through).
    pub fn login_token(&self) -> String {
        self.mac(&[b"login\0"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sign_in_gets_its_own_session_until_it_signs_out() {
        let s = Settings::default();
        let a = s.start_session(Holder::AdminToken);
        let b = s.start_session(Holder::AdminToken);
        assert_ne!(a, b, "a fresh id per sign-in");
        assert_eq!(s.session(&a), Some(Holder::AdminToken));
        s.end_session(&a);
        assert_eq!(s.session(&a), None, "signed out");
        assert_eq!(s.session(&b), Some(Holder::AdminToken), "others stay");
        assert_eq!(Settings::default().session(&b), None, "gone at a restart");
    }
}
