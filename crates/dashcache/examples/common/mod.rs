//! What every example shares: the cache a service would hold — Redis when `REDIS_URL` is set
//! (as the README says), else the embedded one — and a clean-up that leaves no key behind.
//!
//! Each example uses a key prefix of its own (`ex-basic`, `ex-session`, …), so the examples
//! can run side by side against one server and never touch another application's keys.

#![allow(dead_code)] // each example uses what it needs

use std::sync::Arc;

use dashcache::{Cache, MemoryCache, RedisCache};

/// Redis at `REDIS_URL` (checked: it must answer), or the embedded cache.
pub(crate) async fn cache() -> dashcache::Result<Arc<dyn Cache>> {
    Ok(match redis().await? {
        Some(redis) => Arc::new(redis),
        None => Arc::new(MemoryCache::new()),
    })
}

/// The Redis cache at `REDIS_URL` itself, when set (for what only Redis offers).
pub(crate) async fn redis() -> dashcache::Result<Option<RedisCache>> {
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let redis = RedisCache::connect(url).await?;
            println!("(on Redis at {})", redis.url());
            Ok(Some(redis))
        }
        Err(_) => Ok(None),
    }
}

/// Deletes every key under `prefix` (non-blocking, SCAN-based); how many there were.
pub(crate) async fn clean_up(cache: &dyn Cache, prefix: &str) -> dashcache::Result<u64> {
    let pattern = format!("{}:*", dashcache::glob::escape(prefix));
    cache.delete_pattern(&pattern).await
}
