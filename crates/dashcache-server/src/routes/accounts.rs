//! `GET` and `POST /api/v1/accounts`: the caller's account list, cached and invalidated on
//! writes.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Deserialize;

use super::{check_id, new_id};
use crate::auth::CurrentUser;
use crate::db::Account;
use crate::error::AppError;
use crate::state::AppState;

/// The caller's accounts.
pub(crate) async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<Vec<Account>>, AppError> {
    state.accounts(&user.user_id).await.map(Json)
}

/// A new account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccount {
    connection_id: String,
    name: String,
    #[serde(default)]
    balance_cents: i64,
}

/// Adds an account to one of the caller's connections, then forgets the cached list.
pub(crate) async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    body: Result<Json<NewAccount>, JsonRejection>,
) -> Result<(StatusCode, Json<Account>), AppError> {
    let Json(new) = body?;
    let connection_id = check_id(&new.connection_id)?;
    crate::text::free_text("name", &new.name, 100)?;
    let owned = state
        .db()
        .connection(connection_id)
        .await?
        .is_some_and(|c| c.user_id == user.user_id);
    if !owned {
        return Err(AppError::NotFound("connection"));
    }
    let account = Account {
        id: new_id("a")?,
        user_id: user.user_id.clone(),
        connection_id: connection_id.to_owned(),
        name: new.name,
        balance_cents: new.balance_cents,
    };
    state.db().insert_account(&account).await?;
    state.invalidate_accounts(&user.user_id).await;
    Ok((StatusCode::CREATED, Json(account)))
}
