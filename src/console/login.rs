//! Signing in and out of the console: the admin token, a user's API token, or a user's name and
//! password (`rulehook users passwd`) in exchange for a session cookie. Every sign-in, and every
//! refused one, is written to the audit trail. Failed sign-ins spend the client address's budget
//! of failed verifications (`--failed-auth-per-second`), so passwords cannot be guessed quickly.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, Holder, Viewer};
use super::error::{OrPage, PageError};
use super::pages::Frame;
use super::render::{page_with, secured};
use crate::access::{Principal, Role, User};
use crate::app::{ApiError, AppState};

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    pub next: Option<String>,
}

/// `GET /console/login`: the sign-in forms.
pub async fn login_form(State(st): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    login_page(&st, &auth::safe_next(q.next.as_deref()), None)
}

/// The sign-in page, with the error of the last try (its status decided by `server/error.rs`).
fn login_page(st: &AppState, next: &str, error: Option<ApiError>) -> Response {
    let status = error
        .as_ref()
        .map_or(StatusCode::OK, |e| e.status_and_code().0);
    let users = st.guard.users.as_ref().and_then(|u| u.list().ok());
    page_with(
        status,
        "login.html",
        json!({
            "frame": Frame { nav: "login", form_token: &st.console.login_token(), session: false, operator: false },
            "next": next, "error": error.map(|e| e.to_string()),
            "configured": st.admin_token.is_some() || users.as_ref().is_some_and(|l| !l.is_empty()),
            "proxy": st.guard.sso.as_ref().map(|s| s.user_header.as_str()),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub token: String,
    /// The admin token or a user's API token.
    #[serde(default)]
    pub admin_token: String,
    /// A user's name, with `password`.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
    pub next: Option<String>,
}

/// Who signed in, and the cookie that keeps them signed in.
struct SignedIn {
    who: Principal,
    cookie: String,
    how: &'static str,
}

/// `POST /console/login`: credentials in exchange for a session cookie.
pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = auth::safe_next(f.next.as_deref());
    if let Err(e) = auth::check_login_post(&st, &f.token) {
        return login_page(&st, &next, Some(e.into()));
    }
    // Every try spends one of the address's sign-in failures (a budget of its own: failed
    // webhooks from the same address do not spend it) before the credentials are looked at (a
    // sign-in that succeeds gets it back): past the budget nothing is checked, so a password
    // cannot be guessed faster than `--failed-auth-per-second`, however many tries are sent at
    // once, and no flood of tries can run the memory-hungry password hash in parallel.
    if let Err(wait) = st.guard.login_failures.failed(peer.ip()) {
        tracing::info!(peer = %peer.ip(), user = f.user.trim(), "console: a sign-in was refused unchecked: too many failed tries from this address");
        let e = ApiError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64);
        return login_page(&st, &next, Some(e));
    }
    let signed_in = match check(&st, &f).await {
        Ok(s) => {
            st.guard.login_failures.refund(peer.ip());
            s
        }
        Err(e) => return refused(&st, &next, peer, &f, e).await,
    };
    let comment = Some(format!("console sign-in with {}", signed_in.how));
    if let Err(e) = crate::app::audit(&st, &signed_in.who, "login", "console", comment).await {
        return login_page(&st, &next, Some(e));
    }
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/",
        auth::COOKIE,
        signed_in.cookie
    );
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    secured(resp)
}

/// Password checks (Argon2id, 19 MiB each) running at once, at most.
const PASSWORD_CHECKS_AT_ONCE: usize = 4;
static PASSWORD_CHECKS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(PASSWORD_CHECKS_AT_ONCE);

/// Checks the credentials of a sign-in form: a name and password, else a token.
async fn check(st: &AppState, f: &LoginForm) -> Result<SignedIn, ApiError> {
    let name = f.user.trim();
    if !name.is_empty() || !f.password.is_empty() {
        let Some(users) = st.guard.users.clone() else {
            return Err(ApiError::BadLogin("this service has no users file"));
        };
        let (name, password) = (name.to_string(), f.password.clone());
        // Argon2 takes tens of milliseconds of CPU and 19 MiB: not on the async threads, and
        // only a few at once (tries from many addresses wait their turn).
        // The turn is held by the check itself, so a client that goes away does not free it
        // while the hash still runs.
        let turn = PASSWORD_CHECKS
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(format!("the password check failed: {e}")))?;
        let found = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            users.by_password(&name, &password)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the password check failed: {e}")))?
        .map_err(|e| ApiError::Users(e.to_string()))?;
        return match found {
            Some(u) => Ok(user_session(st, u, "a password")),
            None => Err(ApiError::BadLogin("wrong user name or password")),
        };
    }
    let given = f.admin_token.trim();
    if let Some(want) = &st.admin_token
        && !given.is_empty()
        && crate::verify::mac::secret_eq(want.as_bytes(), given.as_bytes())
    {
        return Ok(SignedIn {
            who: Principal {
                name: "admin-token".into(),
                role: Role::Admin,
            },
            cookie: st.console.start_session(Holder::AdminToken),
            how: "the admin token",
        });
    }
    let user = match (&st.guard.users, given.is_empty()) {
        (Some(users), false) => users
            .user_by_token(given)
            .map_err(|e| ApiError::Users(e.to_string()))?,
        _ => None,
    };
    match user {
        Some(u) => Ok(user_session(st, u, "an API token")),
        None => Err(ApiError::BadLogin(
            "that is neither the admin token nor a user's token",
        )),
    }
}

fn user_session(st: &AppState, u: User, how: &'static str) -> SignedIn {
    SignedIn {
        cookie: st.console.start_session(Holder::User {
            name: u.name.clone(),
            credentials: u.credentials(),
        }),
        who: u.principal(),
        how,
    }
}

/// A refused sign-in (its try already counted against the address's budget of failures),
/// audited (under the name given, if any, in the refused sign-ins' own list, folded per address
/// and minute: see `access::audit`), and the form again with the reason. A try that could not
/// be checked (the users file unreadable) gets its try back.
async fn refused(
    st: &AppState,
    next: &str,
    peer: SocketAddr,
    f: &LoginForm,
    e: ApiError,
) -> Response {
    if !matches!(e, ApiError::BadLogin(_)) {
        st.guard.login_failures.refund(peer.ip());
        return login_page(st, next, Some(e));
    }
    let name = f.user.trim();
    tracing::info!(peer = %peer.ip(), user = name, "console: a sign-in was refused: {e}");
    let who = Principal {
        // Only a well-formed name is recorded: a password typed into the name field is not.
        name: if crate::access::valid_name(name) {
            name.to_string()
        } else {
            "unknown".to_string()
        },
        role: Role::Viewer,
    };
    let mut record = crate::access::audit::Record::new(
        &who,
        "login.refused",
        "console",
        Some(format!("{e}; from {}", peer.ip())),
    );
    record.role = "none".into();
    let state = st.engine.store().state.clone();
    if let Err(err) = crate::access::audit::append_refused(state.as_ref(), record).await {
        tracing::warn!("a refused sign-in could not be audited: {err}");
    }
    login_page(st, next, Some(e))
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    pub token: String,
}

/// `POST /console/logout`: ends the session (its cookie stops working, copies of it too) and
/// tells the browser to forget the cookie.
pub async fn logout(
    v: Viewer,
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Result<Response, PageError> {
    auth::check_post(&v, &f.token).or_page(&v)?;
    if let Some(id) = auth::session_cookie(&headers) {
        st.console.end_session(id);
    }
    let mut resp = Redirect::to("/console/login").into_response();
    let gone = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        auth::COOKIE
    );
    if let Ok(v) = gone.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(secured(resp))
}
