//! Who a request is, and the extractors that demand a role: a handler names the role it needs
//! in its signature, so none can forget the check. Runs after [`super::admin_plane::gate`].
//!
//! Identity, in order: a bearer token equal to `RULEHOOK_ADMIN_TOKEN` (`admin-token`, admin);
//! a user's token (`users.json`); the user a trusted reverse proxy names
//! (`--trust-user-header`, see `access::sso`; only from `--trusted-proxy` addresses); a loopback
//! client without a token, unless `--admin-require-token` (`loopback`, admin, as before users
//! existed). A bearer token that is none of these is refused (401), from loopback too; past the
//! client address's budget of failures (`--failed-auth-per-second`) every bearer token is
//! refused unchecked (429). That budget is its own (`Guard::token_failures`): forged webhooks
//! through the same address spend another.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::{ApiError, AppState};
use crate::access::{Principal, Role};

/// The bearer token of a request, if any (the scheme is case-insensitive, RFC 9110).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// Who made the request; `AdminOnly` (401) when nobody it knows.
pub fn principal(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    if let Some(got) = bearer(headers) {
        // Every bearer token spends one of the client address's tries before it is compared
        // (as a console sign-in does, at `--failed-auth-per-second`, from a budget of its own),
        // and a token that is known gets it back: past the budget no token is compared at all,
        // not even the right one, so the admin token and users' tokens cannot be guessed faster
        // than the budget allows.
        let ip = peer.ip();
        let budget = &state.guard.token_failures;
        if let Err(wait) = budget.failed(ip) {
            tracing::info!(peer = %ip, "admin API: a bearer token was refused unchecked: too many wrong tokens from this address");
            return Err(ApiError::RateLimited(
                wait.as_secs_f64().ceil().max(1.0) as u64
            ));
        }
        match known_token(state, got) {
            Ok(Some(who)) => {
                budget.refund(ip);
                return Ok(who);
            }
            // A wrong token: its try stays spent.
            Ok(None) => {}
            // The users file cannot be read: no fault of the client's.
            Err(e) => {
                budget.refund(ip);
                return Err(e);
            }
        }
    }
    if let Some(sso) = &state.guard.sso {
        match sso.identify(peer.ip(), headers, state.guard.users.as_ref()) {
            Ok(Some(who)) => {
                if sso.newly_seen(&who) {
                    audit_header_login(state, &who, sso.user_header.as_str(), peer);
                }
                return Ok(who);
            }
            Ok(None) => {}
            Err(e) => return Err(ApiError::ProxyUser(e.to_string())),
        }
    }
    // A token nobody has (a typo, a removed user's) is refused from loopback too: taken for
    // the loopback admin, the request would act (and be audited) as someone it does not claim.
    if bearer(headers).is_some() {
        return Err(ApiError::UnknownToken);
    }
    let ip = peer.ip();
    let loopback = ip.is_loopback()
        || matches!(ip, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
    if loopback && state.guard.admin_loopback {
        return Ok(Principal {
            name: "loopback".into(),
            role: Role::Admin,
        });
    }
    Err(ApiError::AdminOnly)
}

/// The admin token's holder or the user whose API token `got` is; `None` for a token nobody has.
fn known_token(state: &AppState, got: &str) -> Result<Option<Principal>, ApiError> {
    if let Some(want) = &state.admin_token
        && crate::verify::mac::secret_eq(want.as_bytes(), got.as_bytes())
    {
        return Ok(Some(Principal {
            name: "admin-token".into(),
            role: Role::Admin,
        }));
    }
    match &state.guard.users {
        Some(users) => users
            .by_token(got)
            .map_err(|e| ApiError::Users(e.to_string())),
        None => Ok(None),
    }
}

/// A sign-in through the proxy's header, written to the audit trail beside the request (which
/// does not wait for it; a failure is logged).
fn audit_header_login(state: &AppState, who: &Principal, header: &str, peer: SocketAddr) {
    let store = state.engine.store().state.clone();
    let comment = format!("signed in by {header} from the trusted proxy {}", peer.ip());
    let record = crate::access::audit::Record::new(who, "login", "header", Some(comment));
    tracing::info!(who = %record.who, role = %record.role, "audit: sign-in by the proxy's header");
    tokio::spawn(async move {
        if let Err(e) = crate::access::audit::append(store.as_ref(), record).await {
            tracing::warn!("a header sign-in could not be audited: {e}");
        }
    });
}

/// `who` may act as `needed`, or a 403 naming the role needed.
pub fn require(who: Principal, needed: Role) -> Result<Principal, ApiError> {
    if who.role >= needed {
        Ok(who)
    } else {
        Err(ApiError::NeedsRole {
            needed: needed.as_str(),
            who: who.name,
            role: who.role.as_str(),
        })
    }
}

fn from_parts(parts: &Parts, state: &AppState, needed: Role) -> Result<Principal, ApiError> {
    let ConnectInfo(peer) = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .cloned()
        .ok_or(ApiError::AdminOnly)?;
    require(principal(state, peer, &parts.headers)?, needed)
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        pub struct $name(pub Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
                from_parts(parts, state, $role).map($name)
            }
        }
    };
}

role_extractor!(
    /// Proof the caller may read (viewer or higher).
    AsViewer,
    Role::Viewer
);
role_extractor!(
    /// Proof the caller may replay and re-run (operator or higher).
    AsOperator,
    Role::Operator
);
role_extractor!(
    /// Proof the caller may approve and reject (approver or higher).
    AsApprover,
    Role::Approver
);
role_extractor!(
    /// Proof the caller may manage users (admin).
    AsAdmin,
    Role::Admin
);
