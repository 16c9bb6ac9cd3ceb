//! The cache follows the database: which tables' changes invalidate which keys (declared once,
//! here), and the consumer that applies them in this instance. See `dashcache::coherent`.
//!
//! The service's own invalidations after a write stay as the fast path (read-your-writes);
//! correctness no longer depends on them: a write made while Redis is partitioned, frozen or
//! paused, by an instance that crashed right after its commit, or with plain SQL, reaches every
//! instance through the log within Δ_db (`CACHE_DB_STALENESS_MS`).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use dashcache::authz::PermissionCache;
use dashcache::coherent::log::{
    Change, Consumer, ConsumerStatus, Dialect, InvalidationLog, Mapping,
};
use dashcache::coherent::{Follower, Target};
use dashcache::hybrid::HybridCache;
use dashcache::session::SessionStore;
use dashcache::{Cache, CacheSettings, Keys};

use super::{AppState, ServiceSession};

/// The namespaces whose truth is in the database: by default all of them follow the log
/// (`CACHE_DB_COHERENT` chooses otherwise). One-time tokens, rate-limit buckets and the
/// provider API's answers live only in the cache.
pub const COHERENT_NAMESPACES: [&str; 7] = [
    "user", "session", "security", "authz", "accounts", "provider", "txn",
];

/// How the backend follows the log: the follower it was built with, the cache the log's
/// entries are applied to (Redis, or the embedded cache), and the L1 evicted at once.
#[derive(Clone, Debug)]
pub struct Follow {
    /// The proof the backend's reads are gated by.
    pub follower: Follower,
    /// Where entries are applied (never through L1 or a gate).
    pub shared: Arc<dyn Cache>,
    /// The hybrid cache whose L1 is evicted at once, when there is one.
    pub local: Option<HybridCache>,
}

/// The follower for `settings`' coherent namespaces, or `None` when following is off.
///
/// # Errors
/// A namespace `keys` does not declare, or a bound out of range.
pub fn follower_for(settings: &CacheSettings, keys: &Keys) -> dashcache::Result<Option<Follower>> {
    let namespaces: Vec<&str> = match &settings.db_coherent {
        None => COHERENT_NAMESPACES.to_vec(),
        Some(list) => list.iter().map(String::as_str).collect(),
    };
    // Only namespaces whose truth is in the database: following another (rate-limit buckets,
    // one-time tokens) would sweep it away when the log cannot be proven.
    if let Some(other) = namespaces
        .iter()
        .find(|ns| !COHERENT_NAMESPACES.contains(ns))
    {
        return Err(dashcache::Error::new(
            dashcache::ErrorKind::InvalidArgument,
            format!(
                "CACHE_DB_COHERENT names {other:?}, whose truth is not in the database; choose among \
             {} (or `off`)",
                COHERENT_NAMESPACES.join(", ")
            ),
        ));
    }
    if namespaces.is_empty() {
        return Ok(None);
    }
    Follower::for_namespaces(keys, namespaces, settings.db_staleness).map(Some)
}

/// Every cached table, the columns its trigger records, and what a change invalidates.
///
/// # Errors
/// Never in practice (the names are constants).
pub fn mapping(
    keys: &Keys,
    sessions: &SessionStore<ServiceSession>,
    permissions: &PermissionCache,
) -> dashcache::Result<Mapping> {
    let k = keys.clone();
    let mapping = Mapping::new().table("users", &["id"], move |change, out| {
        each(change, "id", |id| {
            out.push(Target::key(k.key(["user", id])?));
            Ok(())
        })
    })?;
    let (p, k) = (permissions.clone(), keys.clone());
    let mapping = mapping.table("user_roles", &["user_id"], move |change, out| {
        // The user's permissions, and their profile, which shows their roles.
        each(change, "user_id", |user| {
            out.push(p.invalidation(user)?);
            out.push(Target::key(k.key(["user", user])?));
            Ok(())
        })
    })?;
    let s = sessions.clone();
    let mapping = mapping.table(
        "sessions",
        &["id", "user_id", "expires_at", "revoked_at"],
        move |change, out| {
            use dashcache::coherent::log::Op;
            if change.op == Op::Insert {
                // A new session is no change to a cached one.
                return Ok(());
            }
            let expiry = |row: &dashcache::coherent::log::Row| row.int("expires_at").unwrap_or(0);
            let (old, new) = (change.rows.first(), change.rows.last());
            let now = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(i64::MAX);
            // Revoked, deleted, expired or made to expire sooner: it goes, with a tombstone so
            // a copy read before cannot be stored after. Any other change: the cached copy
            // goes, and the next lookup reads the row again.
            let ends = change.op == Op::Delete
                || change.rows.iter().any(|r| !r.is_null("revoked_at"))
                || new.is_some_and(|n| expiry(n) <= now)
                || old.zip(new).is_some_and(|(o, n)| expiry(n) < expiry(o));
            for handle in distinct(change, "id") {
                let [tombstone, session] = s.invalidation(
                    &handle,
                    UNIX_EPOCH
                        + Duration::from_millis(
                            new.map_or(0, expiry)
                                .max(old.map_or(0, expiry))
                                .max(0)
                                .unsigned_abs(),
                        ),
                )?;
                if ends {
                    out.push(tombstone);
                }
                out.push(session);
            }
            Ok(())
        },
    )?;
    let k = keys.clone();
    let mapping = mapping.table("security_versions", &["scope"], move |change, out| {
        each(change, "scope", |scope| {
            let key = match scope.strip_prefix("user:") {
                Some(user) => k.key(["security", "user", user])?,
                None => k.key(["security", scope])?,
            };
            out.push(Target::key(key));
            Ok(())
        })
    })?;
    let k = keys.clone();
    let mapping = mapping.table(
        "provider_connections",
        &["id", "user_id"],
        move |change, out| {
            each(change, "id", |id| {
                out.push(Target::key(k.key(["provider", "connection", id])?));
                Ok(())
            })
        },
    )?;
    let k = keys.clone();
    let mapping = mapping.table("accounts", &["id", "user_id"], move |change, out| {
        each(change, "user_id", |user| {
            out.push(Target::key(k.key(["accounts", "user", user])?));
            Ok(())
        })
    })?;
    let k = keys.clone();
    mapping.table("transactions", &["account_id"], move |change, out| {
        // A new version of the account's list: every cached page of it misses.
        each(change, "account_id", |account| {
            out.push(Target::key(k.key(["txn", "version", account])?));
            Ok(())
        })
    })
}

/// The distinct values of `column` over the versions of the changed row.
fn distinct(change: &Change, column: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for row in &change.rows {
        if let Some(value) = row.text(column)
            && !seen.contains(&value)
        {
            seen.push(value);
        }
    }
    seen
}

/// Calls `f` with `column` of every version of the changed row (once per distinct value).
fn each(
    change: &Change,
    column: &str,
    mut f: impl FnMut(&str) -> dashcache::Result<()>,
) -> dashcache::Result<()> {
    let mut seen: Vec<String> = Vec::new();
    for row in &change.rows {
        if let Some(value) = row.text(column)
            && !seen.contains(&value)
        {
            f(&value)?;
            seen.push(value);
        }
    }
    Ok(())
}

impl AppState {
    /// Installs the invalidation log (table and triggers) in the database and starts this
    /// instance's consumer, when the backend follows the log. Idempotent DDL: every instance
    /// runs it at start.
    ///
    /// # Errors
    /// When the log cannot be installed.
    pub async fn follow_database(&self) -> dashcache::Result<()> {
        let Some(follow) = &self.inner.follow else {
            return Ok(());
        };
        let Some(url) = self.inner.db.shared_url() else {
            tracing::warn!(
                "the database is in memory: no other connection can read its invalidation log, \
                 so the cache follows the service's own invalidations only"
            );
            return Ok(());
        };
        let dialect = if self.inner.db.is_postgres() {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        };
        let mapping = mapping(
            &self.inner.keys,
            &self.inner.sessions,
            &self.inner.permissions,
        )?;
        let log = InvalidationLog::new(dialect, mapping);
        log.install(&self.inner.db.pool).await?;
        let mut consumer =
            Consumer::builder(log, url, follow.follower.clone()).shared(Arc::clone(&follow.shared));
        let aside = self.inner.aside.clone();
        let verified = self.session_lookups().verified().clone();
        // A lookup that starts after a change must not join a load that read before it, and a
        // session changed in the database is not vouched for by this instance's memory.
        consumer = consumer.on_invalidate(move |keys| {
            aside.detach(keys);
            verified.forget(keys);
        });
        if let Some(local) = &follow.local {
            consumer = consumer.local(local.clone());
        }
        let consumer = consumer.start()?;
        // Until the first proof every coherent read goes to the database: correct, slower.
        if !consumer.ready(Duration::from_secs(5)).await {
            tracing::warn!(
                status = ?consumer.status(),
                "the invalidation log's consumer has not proven itself yet: reads of the coherent \
                 namespaces go to the database until it does"
            );
        }
        tracing::info!(
            staleness_ms = follow.follower.staleness().as_millis() as u64,
            namespaces = follow.follower.prefixes().join(","),
            "the cache follows the database's invalidation log: these namespaces are answered \
             from the cache only while every commit older than the bound is proven applied"
        );
        if self.inner.consumer.set(consumer).is_err() {
            tracing::warn!("follow_database called twice: the first consumer stays");
        }
        Ok(())
    }

    /// The consumer of the invalidation log, once started.
    pub fn log_consumer(&self) -> Option<&Consumer> {
        self.inner.consumer.get()
    }

    /// What the consumer of the invalidation log has done, when there is one.
    pub fn log_status(&self) -> Option<ConsumerStatus> {
        self.log_consumer().map(Consumer::status)
    }
}
