//! Login and sessions: write-through to the database and the session store.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::check_id;
use crate::auth::{CurrentUser, SESSION_COOKIE, require_self_or, verify_password};
use crate::db::{SessionRow, now_ms};
use crate::error::AppError;
use crate::state::{AppState, ServiceSession};

/// The login form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    user_id: String,
    password: String,
}

/// A session as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct SessionView {
    id: String,
    user_id: String,
    created_at: i64,
    expires_at: i64,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl From<SessionRow> for SessionView {
    fn from(r: SessionRow) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
            ip: r.ip,
            user_agent: r.user_agent,
        }
    }
}

/// `POST /api/v1/sessions`: checks the password, records the session in the database, caches
/// it, and answers with its id (also as an `HttpOnly` cookie).
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
    let hash = state.db().password_hash(&user_id).await?;
    // Unknown user and wrong password answer alike.
    let valid = match hash {
        Some(hash) => verify_password(login.password, hash).await,
        None => false,
    };
    if !valid {
        return Err(AppError::Unauthorized);
    }
    // Fresh from the database, not the cache: a session must be issued under the versions that
    // hold now.
    let versions = state.db().security_versions(&user_id).await?;
    let now = now_ms();
    let lifetime = i64::try_from(state.settings().ttl.session.as_millis()).unwrap_or(i64::MAX / 2);
    let row = SessionRow {
        // Tagged with the user, so on Redis Cluster the session and its user's index share a
        // slot.
        id: state
            .sessions()
            .new_id(&user_id)
            .map_err(|e| AppError::Internal(e.to_string()))?,
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
    if let Err(e) = state
        .sessions()
        .put(&ServiceSession::from(row.clone()), None)
        .await
    {
        // The database has it; the first request will cache it.
        tracing::warn!(code = e.code(), "could not cache a new session");
    }
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}",
        row.id,
        lifetime / 1000
    );
    let body = serde_json::json!({ "session_id": row.id, "user_id": row.user_id, "expires_at": row.expires_at });
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// Finds session `id` in the database and checks the caller may see or end it.
async fn owned_session(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> Result<SessionRow, AppError> {
    let row = state.db().session(check_id(id)?).await?;
    let Some(row) = row.filter(|r| r.revoked_at.is_none() && r.expires_at > now_ms()) else {
        return Err(AppError::NotFound("session"));
    };
    require_self_or(state, user, &row.user_id, "sessions", "manage")
        .await
        .map_err(|_| AppError::NotFound("session"))?;
    Ok(row)
}

/// `GET /api/v1/sessions/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SessionView>, AppError> {
    let Path(id) = path?;
    owned_session(&state, &user, &id)
        .await
        .map(|r| Json(r.into()))
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

/// `DELETE /api/v1/sessions/{id}`: revoked in the database, deleted (with a tombstone) from the
/// cache.
pub(crate) async fn delete(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, AppError> {
    let Path(id) = path?;
    let row = owned_session(&state, &user, &id).await?;
    state.db().revoke_session(&row.id).await?;
    if let Err(e) = state.sessions().delete(&row.id).await {
        revoke_fallback(&state, &row.user_id, &e).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/users/{id}/sessions`: the user's live sessions, from the source of truth.
pub(crate) async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<SessionView>>, AppError> {
    let Path(id) = path?;
    let id = check_id(&id)?;
    require_self_or(&state, &user, id, "sessions", "manage").await?;
    let rows = state.db().sessions_of(id).await?;
    Ok(Json(rows.into_iter().map(SessionView::from).collect()))
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
    if let Err(e) = state.sessions().revoke_all_for_user(id).await {
        revoke_fallback(&state, id, &e).await?;
    }
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}
