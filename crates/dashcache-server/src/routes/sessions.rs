//! Login and sessions: write-through to the database and the session store.
//!
//! A session's bearer token is shown once, in the login response (and its cookie); the
//! database and the cache keep its handle, a keyed hash of it. Listings show handles: they
//! revoke a session, they do not authenticate as it. A client ends its own session with its
//! token, in the header or cookie it authenticates with — never in a URL.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::check_id;
use crate::auth::password;
use crate::auth::{CurrentUser, SESSION_COOKIE, require_self_or};
use crate::db::{SessionRow, now_ms};
use crate::error::AppError;
use crate::state::{AppState, ServiceSession};

/// The login form. Its `Debug` shows the user id, never the password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    user_id: String,
    password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user_id", &self.user_id)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A session as the API shows it: by its handle.
#[derive(Debug, Serialize)]
pub(crate) struct SessionView {
    handle: String,
    user_id: String,
    created_at: i64,
    expires_at: i64,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl From<SessionRow> for SessionView {
    fn from(r: SessionRow) -> Self {
        Self {
            handle: r.id,
            user_id: r.user_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
            ip: r.ip,
            user_agent: r.user_agent,
        }
    }
}

/// `POST /api/v1/sessions`: checks the password — with the same work for a user that does not
/// exist — records the session in the database, caches it, and answers with its token (also
/// as an `HttpOnly` cookie), once.
pub(crate) async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Response, AppError> {
    let Json(login) = body?;
    let user_id = check_id(&login.user_id)?.to_owned();
    if login.password.len() > 1024 {
        return Err(AppError::BadRequest("the password is too long".into()));
    }
    // The account's failed logins, from any address: refused before any work, alike for
    // accounts that exist and ids that do not.
    let account = format!("acct:{}", state.keys().opaque(&user_id));
    if let Some(wait) = account_exhausted(&state, &account).await {
        return Err(AppError::TooManyAttempts(wait));
    }
    let hash = state.db().password_hash(&user_id).await?;
    // An unknown user costs a verification too, against a hash nothing matches: the answer
    // time tells no one which users exist.
    let valid = match hash {
        Some(hash) => password::verify(login.password, hash).await,
        None => {
            password::verify(login.password, password::decoy().to_owned()).await;
            false
        }
    };
    if !valid {
        charge_account(&state, &account).await;
        return Err(AppError::BadCredentials);
    }
    // Fresh from the database, not the cache: a session must be issued under the versions that
    // hold now.
    let versions = state.db().security_versions(&user_id).await?;
    let issued = state
        .sessions()
        .issue(&user_id)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let now = now_ms();
    let lifetime = i64::try_from(state.settings().ttl.session.as_millis()).unwrap_or(i64::MAX / 2);
    let row = SessionRow {
        id: issued.handle.clone(),
        user_id,
        created_at: now,
        expires_at: now + lifetime,
        ip: peer.map(|Extension(ConnectInfo(addr))| addr.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect()),
        global_version: versions.global,
        user_version: versions.user,
        revoked_at: None,
    };
    state.db().insert_session(&row).await?;
    let session = ServiceSession::from(row.clone());
    // This instance has just verified it: while the cache cannot answer, its requests resolve
    // from this memory, even from a network whose failed lookups used up its allowance.
    if let Ok(key) = state.sessions().session_key(&issued.handle) {
        state
            .session_lookups()
            .verified()
            .remember(key, session.clone());
    }
    if let Err(e) = state.sessions().put(&session, None).await {
        // The database has it; the first request will cache it.
        tracing::warn!(code = e.code(), "could not cache a new session");
    }
    let body = serde_json::json!({
        "token": issued.token,
        "session": row.id,
        "user_id": row.user_id,
        "expires_at": row.expires_at,
    });
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    set_cookie(&state, &mut response, &issued.token, lifetime / 1000);
    Ok(response)
}

/// How long until the account may try again, when its failed logins used up the allowance
/// (looked at, not spent; this instance's own buckets while the shared ones are down).
async fn account_exhausted(state: &AppState, account: &str) -> Option<std::time::Duration> {
    let (limiter, rule) = state.web().login_accounts.as_ref()?;
    let decision = match limiter.remaining(rule, account).await {
        Ok(decision) => decision,
        Err(_) => limiter.remaining_locally(rule, account),
    };
    (!decision.allowed).then_some(decision.retry_after)
}

/// Counts one failed login against the account.
async fn charge_account(state: &AppState, account: &str) {
    let Some((limiter, rule)) = state.web().login_accounts.as_ref() else {
        return;
    };
    if limiter.check(rule, account).await.is_err() {
        limiter.check_locally(rule, account);
    }
}

/// Sets (or, with `max_age` 0, expires) the session cookie.
fn set_cookie(state: &AppState, response: &mut Response, token: &str, max_age: i64) {
    let secure = if state.web().secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{secure}"
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
}

/// The live session with `handle` of user `owner`, which the caller may see or end.
async fn owned_session(
    state: &AppState,
    user: &CurrentUser,
    owner: &str,
    handle: &str,
) -> Result<SessionRow, AppError> {
    require_self_or(state, user, owner, "sessions", "manage")
        .await
        .map_err(|_| AppError::NotFound("session"))?;
    let row = state.db().session(check_id(handle)?).await?;
    row.filter(|r| r.user_id == owner && r.revoked_at.is_none() && r.expires_at > now_ms())
        .ok_or(AppError::NotFound("session"))
}

/// `GET /api/v1/sessions/current`: the caller's own session.
pub(crate) async fn current(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<SessionView>, AppError> {
    let row = owned_session(&state, &user, &user.user_id, &user.session).await?;
    Ok(Json(row.into()))
}

/// When a revocation could not reach the cache, the cached copy would stay valid: bump the
/// user's security version instead, which every request checks.
async fn revoke_fallback(
    state: &AppState,
    user: &str,
    error: &dashcache::Error,
) -> Result<(), AppError> {
    tracing::warn!(
        user,
        code = error.code(),
        "session cache unreachable during a revocation; bumping the user's security version"
    );
    state.bump_security_version(Some(user)).await.map(|_| ())
}

/// Revokes one session: in the database, and in the cache (with a tombstone).
async fn revoke(state: &AppState, row: &SessionRow) -> Result<(), AppError> {
    state.db().revoke_session(&row.id).await?;
    if let Ok(key) = state.sessions().session_key(&row.id) {
        state.session_lookups().verified().forget(&[&key]);
    }
    if let Err(e) = state.sessions().delete(&row.id).await {
        revoke_fallback(state, &row.user_id, &e).await?;
    }
    Ok(())
}

/// `DELETE /api/v1/sessions/current`: logout — the session the request authenticated with is
/// revoked, and its cookie expired.
pub(crate) async fn logout(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Response, AppError> {
    let row = owned_session(&state, &user, &user.user_id, &user.session).await?;
    revoke(&state, &row).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&state, &mut response, "", 0);
    Ok(response)
}

/// `GET /api/v1/users/{id}/sessions`: the user's live sessions, from the source of truth, by
/// handle.
pub(crate) async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<SessionView>>, AppError> {
    let Path(id) = path?;
    let id = check_id(&id)?;
    require_self_or(&state, &user, id, "sessions", "manage").await?;
    let rows = state.db().sessions_of(id).await?;
    // Sessions a security-version bump cut off cannot authenticate: not listed as live.
    let current = state.db().security_versions(id).await?;
    Ok(Json(
        rows.into_iter()
            .filter(|r| r.global_version >= current.global && r.user_version >= current.user)
            .map(SessionView::from)
            .collect(),
    ))
}

/// `DELETE /api/v1/users/{id}/sessions/{handle}`: one session, by the handle a listing shows.
pub(crate) async fn revoke_one(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, AppError> {
    let Path((owner, handle)) = path?;
    let row = owned_session(&state, &user, check_id(&owner)?, &handle).await?;
    revoke(&state, &row).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/users/{id}/sessions`: every session of the user, in the database and in the
/// cache (where a racing re-cache is refused too).
pub(crate) async fn revoke_all(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Path(id) = path?;
    let id = check_id(&id)?;
    require_self_or(&state, &user, id, "sessions", "manage").await?;
    let revoked = state.db().revoke_sessions_of(id).await?;
    state.session_lookups().verified().forget_user(id);
    if let Err(e) = state.sessions().revoke_all_for_user(id).await {
        revoke_fallback(&state, id, &e).await?;
    }
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_form_never_shows_its_password() {
        let login = Login {
            user_id: "u2".into(),
            password: "hunter2-hunter2".into(),
        };
        let shown = format!("{login:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u2"), "{shown}");
    }
}
