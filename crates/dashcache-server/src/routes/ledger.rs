//! An account's provider data (balance, holdings) and its paginated transactions.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::check_id;
use crate::auth::CurrentUser;
use crate::db::{Account, Transaction};
use crate::error::AppError;
use crate::state::{AppState, ProviderData, TransactionPage};

/// The caller's account `id` (others' are 404).
async fn own_account(state: &AppState, user: &CurrentUser, id: &str) -> Result<Account, AppError> {
    let id = check_id(id)?;
    state
        .accounts(&user.user_id)
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or(AppError::NotFound("account"))
}

async fn provider(
    state: AppState,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
    what: ProviderData,
) -> Result<Response, AppError> {
    let Path(id) = path?;
    let account = own_account(&state, &user, &id).await?;
    let answer = state.provider_data(&account, what).await?;
    let mut response = Json(answer.body).into_response();
    let headers = response.headers_mut();
    // How old the provider's answer is (RFC 9111 `Age`, whole seconds), and how it was found.
    headers.insert(header::AGE, HeaderValue::from(answer.age.as_secs()));
    headers.insert(
        HeaderName::from_static("x-cache"),
        HeaderValue::from_static(answer.cache),
    );
    Ok(response)
}

/// `GET /api/v1/accounts/{id}/balance`: from the provider, cache-first.
pub(crate) async fn balance(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    provider(state, user, path, ProviderData::Balance).await
}

/// `GET /api/v1/accounts/{id}/holdings`: from the provider, cache-first.
pub(crate) async fn holdings(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    provider(state, user, path, ProviderData::Holdings).await
}

/// The page asked for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /api/v1/accounts/{id}/transactions?cursor=…&limit=…`: newest first, 50 by default.
pub(crate) async fn transactions(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<TransactionPage>, AppError> {
    let Path(id) = path?;
    let Query(page) = query?;
    let account = own_account(&state, &user, &id).await?;
    state
        .transactions(
            &account.id,
            page.cursor.as_deref(),
            page.limit.unwrap_or(50),
        )
        .await
        .map(Json)
}

/// A new transaction.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTransaction {
    amount_cents: i64,
    description: String,
}

/// `POST /api/v1/accounts/{id}/transactions`: adds one; every cached page of the account
/// misses from then on.
pub(crate) async fn add_transaction(
    State(state): State<AppState>,
    user: CurrentUser,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<NewTransaction>, JsonRejection>,
) -> Result<(StatusCode, Json<Transaction>), AppError> {
    let Path(id) = path?;
    let Json(new) = body?;
    crate::text::free_text("description", &new.description, 200)?;
    let account = own_account(&state, &user, &id).await?;
    let t = state
        .add_transaction(&account.id, new.amount_cents, new.description)
        .await?;
    Ok((StatusCode::CREATED, Json(t)))
}
