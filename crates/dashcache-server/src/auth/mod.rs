//! Passwords and sessions.
//!
//! A request authenticates with `Authorization: Bearer <token>` or the `session` cookie. The
//! token is stored nowhere: the session is kept under its handle, a keyed hash of it. The
//! [`authenticate`] middleware resolves the session — from the cache, or from the database when
//! the cache misses or fails (re-caching it), at most so often per client network, so forged
//! tokens cannot hammer the database — checks it against the current security versions, and
//! puts a [`CurrentUser`] (and the rate limiter's `AuthenticatedUser`) into the request.
//! Handlers that need a user extract [`CurrentUser`]; without one they answer 401.

pub mod password;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashcache::ratelimit::{AuthenticatedUser, client_ip, network_of};

use crate::db::now_ms;
use crate::error::AppError;
use crate::state::{AppState, ServiceSession};

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "session";

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    /// The user id.
    pub user_id: String,
    /// The handle of the session it came with.
    pub session: String,
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CurrentUser>()
            .cloned()
            .ok_or(AppError::Unauthorized)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<CurrentUser>().cloned())
    }
}

/// How a request presented its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSource {
    /// `Authorization: Bearer …`: a browser never sends it by itself.
    Bearer,
    /// The session cookie: a browser sends it with requests other sites start, so writes
    /// authenticated by it must come from our own origin ([`same_origin`]).
    Cookie,
}

/// The session token a request presents, if it looks like one (`<22>.<8>` URL-safe
/// characters, see `SessionStore::issue`: anything else is not ours and is not looked up).
pub fn presented_token(parts: &axum::http::HeaderMap) -> Option<String> {
    presented(parts).map(|(token, _)| token)
}

/// The session token a request presents, and how.
pub fn presented(parts: &axum::http::HeaderMap) -> Option<(String, AuthSource)> {
    let bearer = parts
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = || {
        parts
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.trim())
    };
    bearer
        .map(|t| (t, AuthSource::Bearer))
        .or_else(|| cookie().map(|t| (t, AuthSource::Cookie)))
        .filter(|(id, _)| {
            id.len() == 31
                && id.as_bytes()[22] == b'.'
                && id
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| i == 22 || b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(|(id, source)| (id.to_owned(), source))
}

/// Finds the live session `token` authenticates: in the cache, else in the database (and
/// caches it again) — unless `client`'s network has looked up too many sessions the cache did
/// not have, which only forged or stolen-and-revoked tokens do; then refuses it if a security
/// version was bumped since it was issued.
///
/// # Errors
/// Database errors (a cache failure only sends the lookup to the database).
pub async fn resolve_session(
    state: &AppState,
    token: &str,
    client: Option<IpAddr>,
) -> Result<Option<ServiceSession>, AppError> {
    let handle = state.sessions().handle_of(token);
    let cached = match state.sessions().get(&handle).await {
        Ok(found) => found,
        Err(e) => {
            let key = state.sessions().session_key(&handle).unwrap_or_default();
            state.session_fallbacks().record(&key, &e);
            None
        }
    };
    let session = match cached {
        Some(s) => s,
        None => {
            if !lookup_allowed(state, client).await {
                return Ok(None);
            }
            let Some(row) = state.db().session(&handle).await? else {
                return Ok(None);
            };
            if row.revoked_at.is_some() || row.expires_at <= now_ms() {
                return Ok(None);
            }
            let session = ServiceSession::from(row);
            // Refused (a tombstone or a revocation mark) or failed: the database answered for
            // this request either way.
            let _ = state.sessions().put(&session, None).await;
            session
        }
    };
    if session.expires_at <= now_ms() {
        return Ok(None);
    }
    let current = state.security_versions(&session.user_id).await?;
    if session.global_version < current.global || session.user_version < current.user {
        return Ok(None);
    }
    Ok(Some(session))
}

/// Whether a session lookup from `client` may reach the database now (on this instance's own
/// buckets while the cache is down: the limit never switches off).
async fn lookup_allowed(state: &AppState, client: Option<IpAddr>) -> bool {
    let Some((limiter, rule)) = &state.web().session_lookups else {
        return true;
    };
    let id = client.map_or_else(
        || "ip:unknown".to_owned(),
        |ip| format!("ip:{}", network_of(ip, 64)),
    );
    let allowed = match limiter.check(rule, &id).await {
        Ok(decision) => decision.allowed,
        Err(_) => limiter.check_locally(rule, &id).allowed,
    };
    if !allowed && let Some(suppressed) = state.refused_lookups().should_log() {
        tracing::warn!(
            client = id,
            suppressed,
            "session lookups from this network exceed the limit: treated as unauthenticated"
        );
    }
    allowed
}

/// The middleware that resolves the presented session, if any, into a [`CurrentUser`].
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some((token, source)) = presented(request.headers()) {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let client = client_ip(peer, request.headers(), &state.web().trusted_proxies);
        match resolve_session(&state, &token, client).await {
            Ok(Some(session)) => {
                request
                    .extensions_mut()
                    .insert(AuthenticatedUser(session.user_id.clone()));
                request.extensions_mut().insert(CurrentUser {
                    user_id: session.user_id,
                    session: session.id,
                });
                request.extensions_mut().insert(source);
            }
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
    }
    next.run(request).await
}

/// Refuses a state-changing request authenticated by the session cookie unless it comes from
/// the service's own origin (or one configured): its `Origin` says so, or, without one,
/// `Sec-Fetch-Site: same-origin`. With neither header it is refused too. `SameSite=Lax`
/// stops other sites' writes, not a sibling subdomain's (it is the same *site*); this stops
/// both. A request with a bearer token is not the browser's doing and is not checked.
pub async fn same_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        axum::http::Method::GET
            | axum::http::Method::HEAD
            | axum::http::Method::OPTIONS
            | axum::http::Method::TRACE
    );
    let by_cookie = request.extensions().get::<AuthSource>() == Some(&AuthSource::Cookie);
    if !safe && by_cookie && !from_own_origin(&state, request.headers()) {
        return AppError::Refused(
            "a write authenticated by the session cookie must come from this service's own \
             origin (Origin or Sec-Fetch-Site); send the token as a bearer token otherwise"
                .into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether `headers` say the request comes from the service's own origin (or an allowed one).
fn from_own_origin(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = value("origin") {
        let origin = origin.trim_end_matches('/');
        let scheme = if state.web().secure_cookies {
            "https"
        } else {
            "http"
        };
        let own = value("host").map(|host| format!("{scheme}://{host}"));
        return own.as_deref() == Some(origin)
            || state.web().allowed_origins.iter().any(|o| o == origin);
    }
    value("sec-fetch-site") == Some("same-origin")
}

/// Lets `user` act on `owner`'s data: themselves, or with the permission.
///
/// # Errors
/// `Forbidden`, or database errors.
pub async fn require_self_or(
    state: &AppState,
    user: &CurrentUser,
    owner: &str,
    resource: &str,
    action: &str,
) -> Result<(), AppError> {
    if user.user_id == owner || state.allowed(&user.user_id, resource, action).await? {
        Ok(())
    } else {
        Err(AppError::Forbidden)
    }
}
