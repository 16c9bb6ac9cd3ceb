//! Provider connections: cache-aside reads, and the OAuth-style connect and callback with a
//! one-time state.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::{check_id, new_id};
use crate::auth::CurrentUser;
use crate::db::Connection;
use crate::error::AppError;
use crate::state::{AppState, PendingConnection};

pub(crate) use crate::upstream::PROVIDERS;

/// `GET /api/v1/providers/{connection_id}`: the caller's own connection (others' are 404).
pub(crate) async fn get(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Connection>, AppError> {
    let Path(id) = path?;
    let found = state.connection(check_id(&id)?).await?;
    match found {
        Some(c)
            if c.user_id == user.user_id
                || state.allowed(&user.user_id, "connections", "read").await? =>
        {
            Ok(Json(c))
        }
        _ => Err(AppError::NotFound("connection")),
    }
}

/// The connect form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Connect {
    #[serde(default)]
    alias: Option<String>,
}

/// `POST /api/v1/providers/{slug}/connect`: issues a one-time state and answers with the
/// provider's authorize URL.
///
/// The state lives in the cache; while the cache is down it is kept in the database instead
/// (consumed there by one atomic delete), so connecting still works and stays one-time.
pub(crate) async fn connect(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> Result<Json<serde_json::Value>, AppError> {
    let Path(slug) = path?;
    if !PROVIDERS.contains(&slug.as_str()) {
        return Err(AppError::NotFound("provider"));
    }
    // The body is optional: empty means the default alias. One that is there is JSON, and says
    // so (a form a browser can send cross-site is not).
    let form: Connect = if body.is_empty() {
        Connect::default()
    } else if !crate::routes::is_json(&headers) {
        return Err(AppError::Rejected(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON, sent with `Content-Type: application/json`".into(),
        ));
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AppError::Rejected(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid JSON body: {e}"),
            )
        })?
    };
    let alias = form.alias.unwrap_or_else(|| "default".to_owned());
    check_id(&alias)?;
    let pending = PendingConnection {
        user_id: user.user_id,
        provider: slug.clone(),
        alias,
    };
    let ttl = state.settings().ttl.oauth_state;
    let token = match state
        .oauth()
        .issue(&pending, dashcache::Ttl::from(ttl))
        .await
    {
        Ok(token) => token,
        Err(e) => {
            tracing::warn!(
                code = e.code(),
                "OAuth state cache unavailable: keeping the state in the database"
            );
            issue_in_database(&state, &pending, ttl).await?
        }
    };
    let url = format!(
        "https://{slug}.example/oauth/authorize?client_id=dashcache-demo&response_type=code&state={token}&redirect_uri=/api/v1/providers/callback"
    );
    Ok(Json(serde_json::json!({
        "authorize_url": url,
        "state": token,
        "expires_in": ttl.as_secs(),
    })))
}

async fn issue_in_database(
    state: &AppState,
    pending: &PendingConnection,
    ttl: Duration,
) -> Result<String, AppError> {
    // Two session ids: 256 bits from the OS, like the cached tokens.
    let token = format!(
        "{}{}",
        dashcache::session::new_session_id().map_err(|e| AppError::Internal(e.to_string()))?,
        dashcache::session::new_session_id().map_err(|e| AppError::Internal(e.to_string()))?
    );
    let payload = serde_json::to_string(pending).map_err(|e| AppError::Internal(e.to_string()))?;
    state
        .db()
        .insert_oauth_state(&state.keys().opaque(&token), &payload, ttl)
        .await?;
    Ok(token)
}

/// The callback's query.
#[derive(Debug, Deserialize)]
pub(crate) struct Callback {
    state: String,
    code: String,
}

/// `GET /api/v1/providers/callback?state=…&code=…`: consumes the state exactly once (a replay is
/// 400), then — only for the user who started the flow — creates or re-activates the
/// connection and forgets the cached copies it changes. A state presented by anyone else is
/// burnt all the same: someone who saw it (in a log, a referrer, a history) cannot attach their
/// provider account to the victim, nor try again.
pub(crate) async fn callback(
    State(state): State<AppState>,
    user: Result<CurrentUser, AppError>,
    query: Result<Query<Callback>, QueryRejection>,
) -> Result<Json<Connection>, AppError> {
    let Query(cb) = query?;
    if cb.code.is_empty() || cb.code.len() > 512 || cb.state.len() > 128 {
        return Err(AppError::BadRequest("malformed callback".into()));
    }
    let pending = match state.oauth().consume(&cb.state).await {
        Ok(Some(p)) => Some(p),
        // Not in the cache: perhaps issued while it was down.
        Ok(None) | Err(_) => consume_in_database(&state, &cb.state).await?,
    };
    let Some(pending) = pending else {
        return Err(AppError::BadRequest(
            "invalid, expired or already used state".into(),
        ));
    };
    if user?.user_id != pending.user_id {
        tracing::warn!(
            "an OAuth state was presented by another user than the one who started the flow; \
             it is burnt"
        );
        return Err(AppError::Forbidden);
    }
    // The code is exchanged for the provider's access token before anything is stored: a
    // failed exchange leaves no half-made connection.
    let token = match &state.web().upstream {
        Some(client) => Some(client.exchange_code(&pending.provider, &cb.code).await?),
        None => None,
    };
    let connection = state
        .db()
        .upsert_connection(
            &pending.user_id,
            &pending.provider,
            &pending.alias,
            &new_id("c")?,
        )
        .await?;
    if let Some(token) = &token {
        state.store_credential(&connection.id, token).await?;
    }
    state.invalidate_connection(&connection.id).await;
    state.invalidate_accounts(&pending.user_id).await;
    Ok(Json(connection))
}

async fn consume_in_database(
    state: &AppState,
    token: &str,
) -> Result<Option<PendingConnection>, AppError> {
    let payload = state
        .db()
        .consume_oauth_state(&state.keys().opaque(token))
        .await?;
    Ok(payload.and_then(|p| serde_json::from_str(&p).ok()))
}

/// `POST /api/v1/providers/{connection_id}/refresh`: forgets the cached provider answers of
/// the connection's accounts, so the next reads ask the provider.
pub(crate) async fn refresh(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<(axum::http::StatusCode, Json<serde_json::Value>), AppError> {
    let Path(id) = path?;
    match state.connection(check_id(&id)?).await? {
        Some(c) if c.user_id == user.user_id => {
            let forgotten = state.refresh_connection(&c.id).await?;
            Ok((
                axum::http::StatusCode::ACCEPTED,
                Json(serde_json::json!({ "forgotten": forgotten })),
            ))
        }
        _ => Err(AppError::NotFound("connection")),
    }
}
