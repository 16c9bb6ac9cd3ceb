//! What every example shares: the cache a service would hold — Redis when `REDIS_URL` is set
//! (as the README says), else the embedded one — and a clean-up that leaves no key behind.
//!
//! Each example uses a key prefix of its own (`ex-basic`, `ex-session`, …), so the examples
//! can run side by side against one server and never touch another application's keys.

#![allow(dead_code)] // each example uses what it needs

use std::sync::Arc;

use dashcache::{Cache, MemoryCache, RedisCache};

/// Redis at `REDIS_URL` when it answers, else the embedded cache.
pub(crate) async fn cache() -> dashcache::Result<Arc<dyn Cache>> {
    Ok(match redis().await? {
        Some(redis) => Arc::new(redis),
        None => Arc::new(MemoryCache::new()),
    })
}

/// The Redis cache at `REDIS_URL` itself, when set and answering (for what only Redis
/// offers).
///
/// Built the way a service builds it: `build` makes no connection, so it starts while Redis
/// is down (every operation then fails open, and the first that reaches Redis connects). A
/// service would go on and serve from its source of truth; an example has nothing behind its
/// cache, so it says why (the error's `Display`) and runs on the embedded cache instead.
pub(crate) async fn redis() -> dashcache::Result<Option<RedisCache>> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return Ok(None);
    };
    let redis = RedisCache::builder(url).build()?;
    match redis.ping().await {
        Ok(_) => {
            println!("(on Redis at {})", redis.url());
            Ok(Some(redis))
        }
        Err(e) => {
            eprintln!(
                "Redis at {} does not answer ({e}). A service would start anyway and serve \
                 from its source of truth; this example runs on the embedded cache instead.",
                redis.url()
            );
            Ok(None)
        }
    }
}

/// The exit of an example: on an error, its `Display` (what failed, and where) and a failure
/// code — not the `Debug` dump `main` returning an error would print.
pub(crate) fn exit<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Deletes every key under `prefix` (non-blocking, SCAN-based); how many there were.
pub(crate) async fn clean_up(cache: &dyn Cache, prefix: &str) -> dashcache::Result<u64> {
    let pattern = format!("{}:*", dashcache::glob::escape(prefix));
    cache.delete_pattern(&pattern).await
}
