//! Passwords, sessions and permissions.
//!
//! A request authenticates with `Authorization: Bearer <session id>` or the `session` cookie.
//! The [`authenticate`] middleware resolves the session — from the cache, or from the database
//! when the cache misses or fails (re-caching it) — checks it against the current security
//! versions, and puts a [`CurrentUser`] (and the rate limiter's `AuthenticatedUser`) into the
//! request. Handlers that need a user extract [`CurrentUser`]; without one they answer 401.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashcache::ratelimit::AuthenticatedUser;

use crate::db::now_ms;
use crate::error::AppError;
use crate::state::{AppState, ServiceSession};

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "session";

/// An Argon2id hash of `password` (PHC string), with a fresh salt.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        // Hashing with valid default parameters and a generated salt cannot fail; an empty
        // string would never verify, so a failure here locks the account rather than opening it.
        .unwrap_or_default()
}

/// Whether `password` matches the PHC `hash`, on a blocking thread: Argon2 is meant to be slow.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// The role model: admins may do anything; users may read and manage their own data (checked
/// by the handlers), nothing on others.
pub fn role_allows(roles: &[String], _resource: &str, _action: &str) -> bool {
    roles.iter().any(|r| r == "admin")
}

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    /// The user id.
    pub user_id: String,
    /// The session it came with.
    pub session_id: String,
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

/// The session id a request presents, if it looks like one (`<22>.<8>` URL-safe characters,
/// see `SessionStore::new_id`: anything else is not ours and is not looked up).
pub fn presented_session(parts: &axum::http::HeaderMap) -> Option<String> {
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
        .or_else(cookie)
        .filter(|id| {
            id.len() == 31
                && id.as_bytes()[22] == b'.'
                && id
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| i == 22 || b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
}

/// Finds the live session `id`: in the cache, else in the database (and caches it again); then
/// refuses it if a security version was bumped since it was issued.
///
/// # Errors
/// Database errors (a cache failure only sends the lookup to the database).
pub async fn resolve_session(
    state: &AppState,
    id: &str,
) -> Result<Option<ServiceSession>, AppError> {
    let cached = match state.sessions().get(id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(
                code = e.code(),
                "session cache unavailable, reading the database"
            );
            None
        }
    };
    let session = match cached {
        Some(s) => s,
        None => {
            let Some(row) = state.db().session(id).await? else {
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

/// The middleware that resolves the presented session, if any, into a [`CurrentUser`].
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(id) = presented_session(request.headers()) {
        match resolve_session(&state, &id).await {
            Ok(Some(session)) => {
                request
                    .extensions_mut()
                    .insert(AuthenticatedUser(session.user_id.clone()));
                request.extensions_mut().insert(CurrentUser {
                    user_id: session.user_id,
                    session_id: session.id,
                });
            }
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
    }
    next.run(request).await
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
