//! Upstream provider data — balances and holdings — cache-first with API fallback: one call
//! for concurrent misses (across instances with leases), refresh-ahead near the end of the
//! TTL, and the last good answer served, with its age, when the provider fails or is slow.

use std::time::Duration;

use dashcache::Ttl;
use dashcache::aside::{LoaderTimeout, Outcome};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::db::{Account, now_ms};
use crate::error::AppError;
use crate::upstream::UpstreamError;

/// What the provider is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderData {
    /// `GET /v1/accounts/{id}/balance`.
    Balance,
    /// `GET /v1/accounts/{id}/holdings`.
    Holdings,
}

impl ProviderData {
    fn name(self) -> &'static str {
        match self {
            Self::Balance => "balance",
            Self::Holdings => "holdings",
        }
    }
}

/// A provider's answer as cached: the body and when it was fetched.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fetched {
    body: serde_json::Value,
    fetched_at: i64,
}

/// A provider's answer as served.
#[derive(Debug, Clone)]
pub struct ProviderAnswer {
    /// The provider's body.
    pub body: serde_json::Value,
    /// How long ago the provider gave it.
    pub age: Duration,
    /// How it was found: `hit`, `miss`, `stale` (the provider failed; the last good answer
    /// served) or `bypass` (the cache failed).
    pub cache: &'static str,
}

/// Why provider data could not be had.
#[derive(Debug, Clone)]
pub(crate) enum ProviderFailure {
    Upstream(UpstreamError),
    /// The connection has no credential this process can open.
    NotConnected,
    Internal(String),
}

impl From<LoaderTimeout> for ProviderFailure {
    fn from(t: LoaderTimeout) -> Self {
        Self::Upstream(UpstreamError::Timeout(format!("provider ({t})")))
    }
}

impl From<ProviderFailure> for AppError {
    fn from(f: ProviderFailure) -> Self {
        match f {
            ProviderFailure::Upstream(e) => AppError::Upstream(e),
            ProviderFailure::NotConnected => AppError::Conflict(
                "the provider connection has no usable credential: connect it again".into(),
            ),
            ProviderFailure::Internal(e) => AppError::Internal(e),
        }
    }
}

impl AppState {
    /// `what` of `account` from its provider, cache-first.
    ///
    /// # Errors
    /// No upstream configured (503); the provider failing with nothing cached (502, 503 while
    /// its breaker is open, 504 on a timeout); a connection without credential (409).
    pub async fn provider_data(
        &self,
        account: &Account,
        what: ProviderData,
    ) -> Result<ProviderAnswer, AppError> {
        let Some(client) = self.inner.web.upstream.clone() else {
            return Err(AppError::Unavailable(
                "no upstream provider API is configured",
            ));
        };
        let connection = self
            .connection(&account.connection_id)
            .await?
            .ok_or(AppError::NotFound("connection"))?;
        let key = self
            .inner
            .keys
            .key(["upstream", what.name(), account.id.as_str()])
            .map_err(|e| AppError::BadRequest(format!("malformed id: {e}")))?;
        let state = self.clone();
        let account_id = account.id.clone();
        let ttl = Ttl::from(self.inner.settings.ttl.provider_api);
        let lookup = self
            .inner
            .provider_aside
            .load(&key, ttl, move || async move {
                let token = state
                    .credential(&connection.id)
                    .await
                    .map_err(|e| ProviderFailure::Internal(e.to_string()))?
                    .ok_or(ProviderFailure::NotConnected)?;
                let path = format!("/v1/accounts/{account_id}/{}", what.name());
                let body: serde_json::Value = client
                    .get(&connection.provider, what.name(), &path, &token)
                    .await
                    .map_err(ProviderFailure::Upstream)?;
                Ok::<_, ProviderFailure>(Fetched {
                    body,
                    fetched_at: now_ms(),
                })
            })
            .await;
        let fetched = lookup.result?;
        Ok(ProviderAnswer {
            body: fetched.body,
            age: Duration::from_millis(
                u64::try_from(now_ms().saturating_sub(fetched.fetched_at)).unwrap_or(0),
            ),
            cache: match lookup.outcome {
                Outcome::Hit => "hit",
                Outcome::Miss => "miss",
                Outcome::Stale => "stale",
                _ => "bypass",
            },
        })
    }

    /// Forgets every cached provider answer of `connection`'s accounts (the user asked for
    /// fresh data); how many keys were forgotten.
    ///
    /// # Errors
    /// Database errors.
    pub async fn refresh_connection(&self, connection: &str) -> Result<usize, AppError> {
        let accounts = self.inner.db.account_ids_of_connection(connection).await?;
        let mut forgotten = 0;
        for account in &accounts {
            for what in [ProviderData::Balance, ProviderData::Holdings] {
                let Ok(key) = self
                    .inner
                    .keys
                    .key(["upstream", what.name(), account.as_str()])
                else {
                    continue;
                };
                match self.inner.provider_aside.invalidate(&key).await {
                    Ok(_) => forgotten += 1,
                    Err(e) => tracing::warn!(
                        code = e.code(),
                        "could not forget a provider answer; it expires with its TTL"
                    ),
                }
            }
        }
        Ok(forgotten)
    }
}
