//! Who may see the console and how a state-changing request proves it came from the console.
//!
//! Who is let in: whoever the admin API lets in (`server::roles::principal`: the admin token or
//! a user's token as a bearer token, a user named by a trusted proxy's header, loopback clients
//! unless `--admin-require-token`), or the holder of the session cookie the login form sets
//! (`HttpOnly`, `SameSite=Strict`) after the admin token, a user's token, or a user's name and
//! password. The cookie holds a random id drawn at each sign-in, never a credential; the process
//! keeps who it stands for in memory (`app::session`): signing out forgets it, a user's session
//! is bound to the user's token and password hashes (a new one ends it), and sessions end when
//! the process restarts.
//!
//! A POST must carry the console's form token (a MAC only pages of this process contain). That
//! it comes from this origin and names an expected host is checked before any page runs, for the
//! whole admin plane, by `app::admin_plane`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::app::AppState;
pub use crate::app::session::{Holder, Settings};
use crate::verify::mac::secret_eq;

/// The session cookie's name.
pub const COOKIE: &str = "rulehook_session";

/// The admin access rule without the cookie: the admin API's (loopback unless
/// `--admin-require-token`, or the bearer token).
pub fn admin_by_header(state: &AppState, peer: &SocketAddr, headers: &HeaderMap) -> bool {
    crate::app::admin(state, *peer, headers).is_ok()
}

/// The value of cookie `name`, if the request has it.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who the request's session cookie signed in, if it carries an open one: the admin token's
/// holder, or a user whose token and password are still those they signed in with.
fn session(state: &AppState, headers: &HeaderMap) -> Option<crate::access::Principal> {
    let got = cookie(headers, COOKIE)?;
    match state.console.session(got)? {
        Holder::User { name, credentials } => {
            let user = state.guard.users.as_ref()?.get(&name).ok()??;
            (user.credentials() == credentials).then(|| user.principal())
        }
        Holder::AdminToken => state
            .admin_token
            .as_ref()
            .map(|_| crate::access::Principal {
                name: "admin-token".into(),
                role: crate::access::Role::Admin,
            }),
    }
}

/// The session cookie's value in `headers`, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE)
}

/// Proof that the caller may use the console: an extractor, so no page can forget it.
pub struct Viewer {
    /// The token this viewer's forms carry.
    pub form_token: String,
    /// Signed in with the token (a logout button makes sense).
    pub session: bool,
    /// Who this is (the session is the admin token's).
    pub who: crate::access::Principal,
}

impl Viewer {
    /// `Err` (403, naming the role needed) when this viewer's role is below `needed`.
    pub fn may(&self, needed: crate::access::Role) -> Result<(), crate::app::ApiError> {
        crate::app::roles::require(self.who.clone(), needed).map(drop)
    }
}

/// Why a request was not let in: pages send people to the login form; other requests get 401.
pub struct Denied {
    login: Option<String>,
    /// Refused outright (a person the trusted proxy named has no role here): no login helps.
    refused: Option<crate::app::ApiError>,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match (self.refused, self.login) {
            (Some(e), _) => e.into_response(),
            (None, Some(next)) => {
                Redirect::to(&format!("/console/login?next={}", urlencode(&next))).into_response()
            }
            (None, None) => crate::app::ApiError::SignIn.into_response(),
        }
    }
}

/// Percent-encodes a query value or path segment.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Who a console request is: its open session's holder, else whoever the admin API lets in;
/// `Err` with the refusal when a trusted proxy named someone who has no role here.
pub fn who(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Option<(crate::access::Principal, bool)>, crate::app::ApiError> {
    if let Some(who) = session(state, headers) {
        return Ok(Some((who, true)));
    }
    let Some(peer) = peer else {
        return Ok(None);
    };
    match crate::app::roles::principal(state, peer, headers) {
        Ok(who) => Ok(Some((who, false))),
        Err(e @ (crate::app::ApiError::ProxyUser(_) | crate::app::ApiError::RateLimited(_))) => {
            Err(e)
        }
        Err(_) => Ok(None),
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Viewer, Denied> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let (found, refused) = match who(state, peer, &parts.headers) {
            Ok(found) => (found, None),
            Err(e) => (None, Some(e)),
        };
        if let Some((who, session)) = found {
            return Ok(Viewer {
                form_token: state.console.form_token(),
                session,
                who,
            });
        }
        let page = parts.method == axum::http::Method::GET
            && !parts.uri.path().starts_with("/console/live");
        Err(Denied {
            refused,
            login: page.then(|| {
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into())
            }),
        })
    }
}

/// Why a POST was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Forged {
    #[error("the form token is missing or stale; reload the page and try again")]
    BadToken,
}

/// Checks that a POST carries the form token of this process's console pages (its origin and
/// host were checked by `app::admin_plane` before the page ran).
pub fn check_post(viewer: &Viewer, token: &str) -> Result<(), Forged> {
    token_is(&viewer.form_token, token)
}

/// [`check_post`] for the login form.
pub fn check_login_post(state: &AppState, token: &str) -> Result<(), Forged> {
    token_is(&state.console.login_token(), token)
}

fn token_is(want: &str, given: &str) -> Result<(), Forged> {
    if secret_eq(want.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(Forged::BadToken)
    }
}

/// Only local paths may be a login's `next` (no open redirect): a path that starts with one
/// `/`, with no backslash, space or control character anywhere (browsers drop tabs and line
/// breaks from URLs, so `/\t/evil.example` would be `//evil.example`, another site; CR/LF
/// could not be a header anyway). Other characters beyond ASCII are percent-encoded. Anything
/// else is `/`.
pub fn safe_next(next: Option<&str>) -> String {
    let local = |n: &str| {
        n.starts_with('/')
            && !n[1..].starts_with(['/', '\\'])
            && !n
                .chars()
                .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    };
    match next {
        Some(n) if local(n) => {
            let mut out = String::with_capacity(n.len());
            for c in n.chars() {
                if c.is_ascii() {
                    out.push(c);
                } else {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("%{b:02X}"));
                    }
                }
            }
            out
        }
        _ => "/".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/console/rules")), "/console/rules");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("/\t/evil.example/x")), "/");
        assert_eq!(safe_next(Some("/\r\n/evil.example")), "/");
        assert_eq!(safe_next(Some("/\u{a0}/evil.example")), "/");
        assert_eq!(safe_next(Some("/caf\u{e9}")), "/caf%C3%A9");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; rulehook_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn form_tokens_are_keyed_per_process() {
        let (a, b) = (Settings::default(), Settings::default());
        assert_ne!(a.form_token(), b.form_token());
        assert_eq!(a.form_token(), a.form_token());
        assert_ne!(a.form_token(), a.login_token());
    }

    #[test]
    fn form_tokens_must_match() {
        assert_eq!(token_is("abc", "abd"), Err(Forged::BadToken));
        assert_eq!(token_is("abc", "abc"), Ok(()));
    }
}
