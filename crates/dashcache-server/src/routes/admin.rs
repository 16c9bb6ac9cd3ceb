//! Role management and security-version rotation: permission-checked (cached), and
//! invalidating what they change.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use serde::Deserialize;

use super::check_id;
use crate::auth::{CurrentUser, require_self_or};
use crate::error::AppError;
use crate::state::AppState;

/// The roles there are.
const ROLES: [&str; 2] = ["admin", "user"];

async fn require(
    state: &AppState,
    user: &CurrentUser,
    resource: &str,
    action: &str,
) -> Result<(), AppError> {
    if state.allowed(&user.user_id, resource, action).await? {
        Ok(())
    } else {
        Err(AppError::Forbidden)
    }
}

/// The role form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleForm {
    role: String,
}

async fn roles_changed(state: &AppState, user: &str) -> Result<Json<serde_json::Value>, AppError> {
    // The next request of that user sees the change: their cached permission answers are
    // obsolete and their cached profile (which lists roles) is gone.
    state.invalidate_permissions(user).await;
    state.invalidate_user(user).await;
    let roles = state.db().roles(user).await?;
    Ok(Json(serde_json::json!({ "user_id": user, "roles": roles })))
}

/// `POST /api/v1/users/{id}/roles`.
pub(crate) async fn add_role(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<RoleForm>, JsonRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Path(id) = path?;
    let id = check_id(&id)?;
    let Json(form) = body?;
    require(&state, &user, "roles", "manage").await?;
    if !ROLES.contains(&form.role.as_str()) {
        return Err(AppError::BadRequest(format!("roles are {ROLES:?}")));
    }
    if state.db().user(id).await?.is_none() {
        return Err(AppError::NotFound("user"));
    }
    state.db().add_role(id, &form.role).await?;
    roles_changed(&state, id).await
}

/// `DELETE /api/v1/users/{id}/roles/{role}`.
pub(crate) async fn remove_role(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Path((id, role)) = path?;
    let id = check_id(&id)?;
    require(&state, &user, "roles", "manage").await?;
    if !state.db().remove_role(id, &role).await? {
        return Err(AppError::NotFound("role"));
    }
    roles_changed(&state, id).await
}

/// `POST /api/v1/security/rotate`: every session issued so far stops working.
pub(crate) async fn rotate_global(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<serde_json::Value>, AppError> {
    require(&state, &user, "security", "rotate").await?;
    let version = state.bump_security_version(None).await?;
    Ok(Json(
        serde_json::json!({ "scope": "global", "version": version }),
    ))
}

/// `POST /api/v1/users/{id}/security/rotate`: every session of the user stops working.
pub(crate) async fn rotate_user(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Path(id) = path?;
    let id = check_id(&id)?;
    require_self_or(&state, &user, id, "security", "rotate").await?;
    // A version for nobody would be a row no one reads, and a 200 that says something happened.
    if state.db().user(id).await?.is_none() {
        return Err(AppError::NotFound("user"));
    }
    let version = state.bump_security_version(Some(id)).await?;
    Ok(Json(
        serde_json::json!({ "scope": "user", "user_id": id, "version": version }),
    ))
}
