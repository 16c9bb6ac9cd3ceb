//! Rows read cache-aside: users, provider connections, account lists and security versions,
//! each invalidated after the write that changes it.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use dashcache::Ttl;
use dashcache::aside::CachedValue;

use super::{AppState, LoadFailure};
use crate::db::{Account, Connection, Db, DbError, SecurityVersions, User};
use crate::error::AppError;

impl AppState {
    /// The key for `parts` (a namespace, then ids); a malformed id is the client's error.
    pub(super) fn key(&self, parts: &[&str]) -> Result<String, AppError> {
        self.inner
            .keys
            .key(parts.iter().copied())
            .map_err(|e| AppError::BadRequest(format!("malformed id: {e}")))
    }

    /// The record at `parts`, cache-aside for `ttl`: `load` runs (once for concurrent misses)
    /// on its own handle of the database when the cache has nothing usable. "Not found" is
    /// cached briefly too.
    async fn cached<T, F, Fut>(
        &self,
        parts: &[&str],
        ttl: Duration,
        load: F,
    ) -> Result<Option<T>, AppError>
    where
        T: CachedValue,
        F: FnOnce(Db) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, DbError>> + Send + 'static,
    {
        let key = self.key(parts)?;
        let db = self.inner.db.clone();
        let latency = self.load_latency();
        let loaded: Result<Option<T>, LoadFailure> = self
            .inner
            .aside
            .get_or_load_optional(&key, Ttl::from(ttl), move || async move {
                let Some(latency) = latency else {
                    return Ok(load(db).await?);
                };
                tokio::time::sleep(latency / 2).await;
                let row = load(db).await?;
                tokio::time::sleep(latency / 2).await;
                Ok(row)
            })
            .await;
        Ok(loaded?)
    }

    /// Forgets the cached record at `parts` after a write to the database. A failure is
    /// logged, not returned: the write happened, and the entry expires within its TTL.
    async fn forget(&self, parts: &[&str]) {
        let Ok(key) = self.key(parts) else {
            return;
        };
        if let Err(e) = self.inner.aside.invalidate(&key).await {
            tracing::warn!(
                code = e.code(),
                namespace = parts.first().copied().unwrap_or_default(),
                "could not invalidate a cached entry; it expires with its TTL"
            );
        }
    }

    /// A user, cache-aside.
    ///
    /// # Errors
    /// Database errors; a malformed id.
    pub async fn user(&self, id: &str) -> Result<Option<User>, AppError> {
        let owned = id.to_owned();
        let ttl = self.inner.settings.ttl.user;
        self.cached(&["user", id], ttl, move |db| async move {
            db.user(&owned).await
        })
        .await
    }

    /// Forgets the cached copy of user `id`.
    pub async fn invalidate_user(&self, id: &str) {
        self.forget(&["user", id]).await;
    }

    /// A provider connection, cache-aside.
    ///
    /// # Errors
    /// Database errors; a malformed id.
    pub async fn connection(&self, id: &str) -> Result<Option<Connection>, AppError> {
        let owned = id.to_owned();
        let ttl = self.inner.settings.ttl.provider_connection;
        self.cached(&["provider", "connection", id], ttl, move |db| async move {
            db.connection(&owned).await
        })
        .await
    }

    /// Forgets the cached copy of connection `id`.
    pub async fn invalidate_connection(&self, id: &str) {
        self.forget(&["provider", "connection", id]).await;
    }

    /// A user's accounts, cache-aside.
    ///
    /// # Errors
    /// Database errors; a malformed id.
    pub async fn accounts(&self, user: &str) -> Result<Vec<Account>, AppError> {
        let owned = user.to_owned();
        let ttl = self.inner.settings.ttl.accounts_list;
        let accounts = self
            .cached(&["accounts", "user", user], ttl, move |db| async move {
                db.accounts_of(&owned).await.map(Some)
            })
            .await?;
        Ok(accounts.unwrap_or_default())
    }

    /// Forgets the cached account list of `user`.
    pub async fn invalidate_accounts(&self, user: &str) {
        self.forget(&["accounts", "user", user]).await;
    }

    /// The security versions a session of `user` must not be older than: the global one and
    /// the user's, looked up together (one round trip) and cached for `CACHE_TTL_SECURITY_CONFIG`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn security_versions(&self, user: &str) -> Result<SecurityVersions, AppError> {
        let global = self.key(&["security", "global"])?;
        let mine = self.key(&["security", "user", user])?;
        let db = self.inner.db.clone();
        let owner = user.to_owned();
        let (g, u) = (global.clone(), mine.clone());
        let ttl = Ttl::from(self.inner.settings.ttl.security_config);
        let loaded: Result<Vec<Option<i64>>, LoadFailure> = self
            .inner
            .aside
            .get_many_or_load(
                &[&global, &mine],
                ttl,
                move |_missing: Vec<String>| async move {
                    let v = db.security_versions(&owner).await?;
                    Ok::<_, LoadFailure>(HashMap::from([(g, v.global), (u, v.user)]))
                },
            )
            .await;
        let versions = loaded?;
        Ok(SecurityVersions {
            global: versions.first().copied().flatten().unwrap_or(0),
            user: versions.get(1).copied().flatten().unwrap_or(0),
        })
    }

    /// Bumps the global security version (`None`) or a user's, revoking every session issued
    /// under the old one: at once through this cache, within `CACHE_TTL_SECURITY_CONFIG` for
    /// instances with their own.
    ///
    /// # Errors
    /// Database errors.
    pub async fn bump_security_version(&self, user: Option<&str>) -> Result<i64, AppError> {
        let version = self.inner.db.bump_security_version(user).await?;
        match user {
            Some(u) => self.forget(&["security", "user", u]).await,
            None => self.forget(&["security", "global"]).await,
        }
        Ok(version)
    }
}
