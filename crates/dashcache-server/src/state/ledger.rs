//! Paginated transaction lists: pages cached by (account, cursor, page size) under a
//! per-account list version, so one write — a new version — makes every cached page of that
//! account miss, whatever their number, while other accounts keep theirs.
//!
//! The version is random, not a counter: a version key that was evicted and made again can
//! never match the pages cached under the old one.

use std::time::Duration;

use dashcache::Ttl;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{AppState, LoadFailure};
use crate::db::{Transaction, now_ms};
use crate::error::AppError;

/// The largest page.
pub const MAX_PAGE: u32 = 200;

/// One page of transactions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionPage {
    /// The transactions.
    pub items: Vec<Transaction>,
    /// The cursor of the next page, when there is one.
    pub next_cursor: Option<String>,
}

/// How long a list version outlives the pages under it (whose TTL is at most 10 minutes).
/// The cursor segment of a first page's key. A cursor is an id (`check_id`), which never
/// holds `@`: no client can name the first page's key with a cursor of its own.
const FIRST_PAGE: &str = "@first";

const VERSION_TTL: Duration = Duration::from_secs(24 * 3600);

fn new_version() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

impl AppState {
    /// The version key of `account`'s lists.
    fn list_version_key(&self, account: &str) -> Result<String, AppError> {
        self.inner
            .keys
            .key(["txn", "version", account])
            .map_err(|e| AppError::BadRequest(format!("malformed id: {e}")))
    }

    /// The current list version of `account`, made when there is none; `None` when the cache
    /// cannot say (then pages are read from the database, uncached).
    async fn list_version(&self, account: &str) -> Result<Option<String>, AppError> {
        let key = self.list_version_key(account)?;
        let cache = &self.inner.cache;
        match cache.get(&key).await {
            Ok(Some(v)) => return Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Ok(None) => {}
            Err(_) => return Ok(None),
        }
        let mine = new_version();
        match cache
            .set_if_absent(&key, mine.clone().into(), Ttl::from(VERSION_TTL))
            .await
        {
            Ok(true) => Ok(Some(mine)),
            // Another request made it first: use theirs.
            Ok(false) => Ok(cache
                .get(&key)
                .await
                .ok()
                .flatten()
                .map(|v| String::from_utf8_lossy(&v).into_owned())),
            Err(_) => Ok(None),
        }
    }

    /// A page of `account`'s transactions: `limit` (1–[`MAX_PAGE`]) of them older than
    /// `cursor`, cached for `CACHE_TTL_TRANSACTIONS`.
    ///
    /// # Errors
    /// A bad limit or cursor (400); database errors.
    pub async fn transactions(
        &self,
        account: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<TransactionPage, AppError> {
        if limit == 0 || limit > MAX_PAGE {
            return Err(AppError::BadRequest(format!(
                "limit must be from 1 to {MAX_PAGE}"
            )));
        }
        if let Some(c) = cursor {
            crate::ids::check_id(c)?;
        }
        let db = self.inner.db.clone();
        let (owned, after) = (account.to_owned(), cursor.map(str::to_owned));
        let load = move || async move {
            // One more than the page, to know whether another follows.
            let mut items = db.transactions(&owned, after.as_deref(), limit + 1).await?;
            let next_cursor = if items.len() > limit as usize {
                items.truncate(limit as usize);
                items.last().map(|t| t.id.clone())
            } else {
                None
            };
            Ok::<_, LoadFailure>(TransactionPage { items, next_cursor })
        };
        let Some(version) = self.list_version(account).await? else {
            return Ok(load().await?);
        };
        let limit_text = limit.to_string();
        let key = self
            .inner
            .keys
            .key([
                "txn",
                "page",
                account,
                version.as_str(),
                // The first page: a value `check_id` never lets a cursor be.
                cursor.unwrap_or(FIRST_PAGE),
                limit_text.as_str(),
            ])
            .map_err(|e| AppError::BadRequest(format!("malformed id: {e}")))?;
        let ttl = Ttl::from(self.inner.settings.ttl.transactions);
        Ok(self.inner.aside.get_or_load(&key, ttl, load).await?)
    }

    /// Adds a transaction to `account`, then gives its lists a new version: every cached page
    /// of it misses from now on. A failure to reach the cache is logged: the pages expire
    /// within `CACHE_TTL_TRANSACTIONS`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn add_transaction(
        &self,
        account: &str,
        amount_cents: i64,
        description: String,
    ) -> Result<Transaction, AppError> {
        let posted_at = now_ms();
        let suffix = crate::ids::new_id("")?;
        let t = Transaction {
            id: format!("t{posted_at:013}{}", &suffix[..8]),
            account_id: account.to_owned(),
            amount_cents,
            description,
            posted_at,
        };
        self.inner.db.insert_transaction(&t).await?;
        let key = self.list_version_key(account)?;
        if let Err(e) = self
            .inner
            .cache
            .set(&key, new_version().into(), Ttl::from(VERSION_TTL))
            .await
        {
            tracing::warn!(
                code = e.code(),
                "could not renew a transaction list version; its pages expire with their TTL"
            );
        }
        Ok(t)
    }
}
