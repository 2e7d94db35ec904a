//! Console passwords: Argon2id hashes in the PHC string format (`$argon2id$v=19$…`), salted
//! per password. It exists so people can sign in to the console without pasting an API token;
//! the hash is slow on purpose, so a stolen `users.json` does not give the passwords away.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::UsersError;

/// Shortest password accepted.
pub const MIN_LEN: usize = 8;
/// Longest password accepted (bytes), so a sign-in form cannot make the hash do unbounded work.
pub const MAX_LEN: usize = 1024;

/// The PHC string of `password` under a fresh salt (Argon2id, the crate's default parameters:
/// 19 MiB, 2 passes).
pub fn hash(password: &str) -> Result<String, UsersError> {
    let chars = password.chars().count();
    if chars < MIN_LEN || password.len() > MAX_LEN {
        return Err(UsersError::Password(format!(
            "a password must be {MIN_LEN} to {MAX_LEN} characters long"
        )));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Password(format!("the password could not be hashed: {e}")))
}

/// A PHC string of a random password nobody has, verified against when the user has none (or
/// does not exist), so a wrong name takes as long to refuse as a wrong password.
static DECOY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash(&hex::encode(rand::random::<[u8; 16]>())).unwrap_or_default());

/// Whether `password` is the one `stored` was made from (`None`: never).
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    let (phc, real) = match stored {
        Some(s) => (s, true),
        None => (DECOY.as_str(), false),
    };
    match PasswordHash::new(phc) {
        Ok(parsed) => {
            let ok = Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            ok && real
        }
        Err(e) => {
            tracing::warn!("a stored password hash cannot be read: {e}");
            false
        }
    }
}
