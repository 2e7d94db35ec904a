//! The console's per-process keys (session cookie, form tokens) and settings. Kept here, below
//! the console and the admin API, because [`super::AppState`] holds them and the admin API's
//! access rule reads the same session.

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
    /// Keys the session cookie and the form token; drawn at start.
    key: [u8; 32],
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: None,
            poll_history: None,
            key: rand::random(),
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

    /// The cookie value for a holder of `token`.
    pub fn session_for(&self, token: &str) -> String {
        self.mac(&[b"session\0", token.as_bytes()])
    }

    /// The cookie value for `user` signed in: it stops working when the user is removed or
    /// given a new token or password.
    pub fn user_session(&self, user: &crate::access::User) -> String {
        let mac = self.mac(&[
            b"user-session\0",
            user.name.as_bytes(),
            b"\0",
            user.credentials().as_bytes(),
        ]);
        format!("u.{}.{mac}", user.name)
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
