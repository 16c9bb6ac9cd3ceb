//! `GET` and `PATCH /api/v1/users/{id}`: cache-aside reads, invalidated by writes.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use serde::Deserialize;

use super::check_id;
use crate::auth::{CurrentUser, require_self_or};
use crate::db::User;
use crate::error::AppError;
use crate::state::AppState;
use crate::text;

/// A user: the whole profile for themselves and admins; for anyone else logged in, the id and
/// name only (no e-mail address, no roles).
pub(crate) async fn get(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Path(id) = path?;
    let id = check_id(&id)?;
    let found = state.user(id).await?.ok_or(AppError::NotFound("user"))?;
    let whole = require_self_or(&state, &user, id, "users", "read")
        .await
        .is_ok();
    let body = if whole {
        serde_json::to_value(&found).map_err(|e| AppError::Internal(e.to_string()))?
    } else {
        serde_json::json!({ "id": found.id, "name": found.name })
    };
    Ok(Json(body))
}

/// The fields `PATCH` may change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatch {
    name: Option<String>,
    email: Option<String>,
}

/// Changes a user's name or e-mail (themselves, or an admin), then forgets the cached copy.
pub(crate) async fn patch(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<UserPatch>, JsonRejection>,
) -> Result<Json<User>, AppError> {
    let Path(id) = path?;
    let id = check_id(&id)?;
    let Json(patch) = body?;
    require_self_or(&state, &user, id, "users", "manage").await?;
    if let Some(name) = &patch.name {
        text::free_text("name", name, 100)?;
    }
    if let Some(email) = &patch.email {
        text::email("email", email)?;
    }
    let updated = state
        .db()
        .update_user(id, patch.name.as_deref(), patch.email.as_deref())
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                AppError::Conflict("that e-mail address belongs to another account".into())
            } else {
                AppError::Database(e)
            }
        })?;
    if !updated {
        return Err(AppError::NotFound("user"));
    }
    state.invalidate_user(id).await;
    let updated = state.db().user(id).await?;
    updated.map(Json).ok_or(AppError::NotFound("user"))
}
