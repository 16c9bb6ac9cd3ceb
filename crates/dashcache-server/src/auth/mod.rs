//! Passwords and sessions.
//!
//! A request authenticates with `Authorization: Bearer <token>` or the `session` cookie. The
//! token is stored nowhere: the session is kept under its handle, a keyed hash of it. The
//! [`authenticate`] middleware resolves the session — from the cache, or from the database when
//! the cache misses (re-caching it), or from this instance's memory of sessions it verified
//! when the cache fails; a client network that presents too many sessions the database does
//! not have is refused before the database ([`crate::state::lookups`]) — checks it against the current
//! security versions, and puts a [`CurrentUser`] (and the rate limiter's `AuthenticatedUser`)
//! into the request, or records why there is none ([`Unauthenticated`]). Handlers that need a
//! user extract [`CurrentUser`]; without one they answer 401 saying why.

pub mod password;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashcache::ratelimit::{AuthenticatedUser, client_ip};

use crate::db::now_ms;
use crate::error::AppError;
use crate::state::{AppState, ServiceSession};

pub use crate::error::Unauthenticated;
use crate::state::lookups::{Outcome, SessionLookups};

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
            .ok_or_else(|| {
                AppError::Unauthorized(
                    parts
                        .extensions
                        .get::<Unauthenticated>()
                        .copied()
                        .unwrap_or(Unauthenticated::Missing),
                )
            })
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

/// What a request presents as its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// Nothing: no bearer token, no session cookie.
    Nothing,
    /// Something that cannot be a token of ours (another scheme, another shape): it is not
    /// looked up.
    Malformed,
    /// A token of our shape, and how it came.
    Token(String, AuthSource),
}

/// The session a request presents. A bearer token wins over the cookie; an `Authorization`
/// header of another scheme counts only when there is no cookie either. A token of ours is
/// `<22>.<8>` URL-safe characters (see `SessionStore::issue`).
pub fn presented(headers: &axum::http::HeaderMap) -> Presented {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().ok().unwrap_or_default().trim());
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let bearer = authorization.and_then(|v| {
        v.get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map(|_| v[7..].trim())
    });
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.trim())
    };
    let (token, source) = match (bearer, cookie()) {
        (Some(token), _) => (token, AuthSource::Bearer),
        (None, Some(token)) => (token, AuthSource::Cookie),
        (None, None) if authorization.is_some() => return Presented::Malformed,
        (None, None) => return Presented::Nothing,
    };
    let ours = token.len() == 31
        && token.as_bytes()[22] == b'.'
        && token
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 22 || b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ours {
        Presented::Token(token.to_owned(), source)
    } else {
        Presented::Malformed
    }
}

/// Finds the live session `token` authenticates, or says why there is none.
///
/// In the cache first. When the cache does not have it, in the database (and caches it again);
/// when the cache cannot answer, in this instance's memory of sessions it verified recently,
/// else in the database. A database lookup that finds no live session is charged to
/// `client`'s network, and a network that failed too many is refused before the database
/// (see [`crate::state::lookups`]). Then the session is refused if a security version was bumped since it
/// was issued.
///
/// # Errors
/// Database errors (a cache failure only sends the lookup elsewhere).
pub async fn resolve_session(
    state: &AppState,
    token: &str,
    client: Option<IpAddr>,
) -> Result<Result<ServiceSession, Unauthenticated>, AppError> {
    let lookups = state.session_lookups();
    let handle = state.sessions().handle_of(token);
    // Built only off the cached path, which is every request's.
    let key = || state.sessions().session_key(&handle).unwrap_or_default();
    let (session, source) = match state.sessions().get(&handle).await {
        Ok(Some(session)) => (session, Outcome::Cache),
        Ok(None) => match from_database(state, &handle, client).await? {
            Ok(session) => (session, Outcome::Database),
            Err(why) => return Ok(Err(refused(lookups, why))),
        },
        Err(e) => {
            state.session_fallbacks().record(&key(), &e);
            match lookups.verified().get(&key()) {
                Some(session) => (session, Outcome::Memory),
                None => match from_database(state, &handle, client).await? {
                    Ok(session) => (session, Outcome::Database),
                    Err(why) => return Ok(Err(refused(lookups, why))),
                },
            }
        }
    };
    if session.expires_at <= now_ms() {
        lookups.verified().forget(&[&key()]);
        return Ok(Err(refused(lookups, Unauthenticated::Unknown)));
    }
    let current = state.security_versions(&session.user_id).await?;
    if session.global_version < current.global || session.user_version < current.user {
        lookups.verified().forget(&[&key()]);
        if source == Outcome::Database {
            lookups.charge(&SessionLookups::network(client)).await;
        }
        return Ok(Err(refused(lookups, Unauthenticated::Revoked)));
    }
    if source == Outcome::Database {
        lookups.verified().remember(key(), session.clone());
    }
    lookups.count(source);
    Ok(Ok(session))
}

/// Counts a refusal; `why`.
fn refused(lookups: &SessionLookups, why: Unauthenticated) -> Unauthenticated {
    lookups.count(Outcome::Refused(why));
    why
}

/// The session with `handle` from the database, if `client`'s network may still ask and it is
/// live (cached again then); a lookup that finds none is charged to the network.
async fn from_database(
    state: &AppState,
    handle: &str,
    client: Option<IpAddr>,
) -> Result<Result<ServiceSession, Unauthenticated>, AppError> {
    let lookups = state.session_lookups();
    let network = SessionLookups::network(client);
    let Some(_admitted) = lookups.admit(&network).await else {
        return Ok(Err(Unauthenticated::Limited));
    };
    let why = match state.db().session(handle).await? {
        None => Unauthenticated::Unknown,
        Some(row) if row.revoked_at.is_some() => Unauthenticated::Revoked,
        Some(row) if row.expires_at <= now_ms() => Unauthenticated::Unknown,
        Some(row) => {
            let session = ServiceSession::from(row);
            // Refused (a tombstone or a revocation mark) or failed: the database answered for
            // this request either way.
            let _ = state.sessions().put(&session, None).await;
            return Ok(Ok(session));
        }
    };
    lookups.charge(&network).await;
    Ok(Err(why))
}

/// The middleware that resolves the presented session, if any, into a [`CurrentUser`], or
/// records why there is none ([`Unauthenticated`], which a handler's 401 says). The
/// operations token is not a session and is not looked up.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.has_ops_token(request.headers()) {
        return next.run(request).await;
    }
    let why = match presented(request.headers()) {
        Presented::Nothing => Unauthenticated::Missing,
        Presented::Malformed => Unauthenticated::Malformed,
        Presented::Token(token, source) => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let client = client_ip(peer, request.headers(), &state.web().trusted_proxies);
            match resolve_session(&state, &token, client).await {
                Ok(Ok(session)) => {
                    request
                        .extensions_mut()
                        .insert(AuthenticatedUser(session.user_id.clone()));
                    request.extensions_mut().insert(CurrentUser {
                        user_id: session.user_id,
                        session: session.id,
                    });
                    request.extensions_mut().insert(source);
                    return next.run(request).await;
                }
                Ok(Err(why)) => why,
                Err(e) => return e.into_response(),
            }
        }
    };
    request.extensions_mut().insert(why);
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
