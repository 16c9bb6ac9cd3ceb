//! The guide's basic operations: set with a TTL, get (hit, miss), delete, typed JSON, and what
//! to do with an error (log it and carry on: the cache is never the source of truth).
//!
//! `cargo run -p dashcache --example basic` (embedded cache), or with
//! `REDIS_URL=redis://127.0.0.1:6379` to run it against Redis.

use std::sync::Arc;

use dashcache::{Cache, CacheExt, MemoryCache, RedisCache, Ttl};

/// The cache a service holds: Redis when `REDIS_URL` is set, else the embedded one.
async fn cache() -> dashcache::Result<Arc<dyn Cache>> {
    Ok(match std::env::var("REDIS_URL") {
        Ok(url) => Arc::new(RedisCache::connect(url).await?),
        Err(_) => Arc::new(MemoryCache::new()),
    })
}

#[tokio::main]
async fn main() -> dashcache::Result<()> {
    let cache = cache().await?;

    cache
        .set_str("example:user:123", "John Doe", Ttl::secs(3600))
        .await?;

    match cache.get_str("example:user:123").await {
        Ok(Some(name)) => println!("found: {name}"),
        Ok(None) => println!("cache miss"),
        // Fail open: a cache error is logged, and the caller goes to its source of truth.
        Err(e) => eprintln!("cache error ({}), falling back: {e}", e.code()),
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct Profile {
        id: u64,
        name: String,
    }
    let profile = Profile {
        id: 123,
        name: "John Doe".into(),
    };
    cache
        .set_json("example:user:123:profile", &profile, Ttl::secs(3600))
        .await?;
    let back: Option<Profile> = cache.get_json("example:user:123:profile").await?;
    println!("profile: {back:?}");

    if cache.delete("example:user:123").await? {
        println!("deleted");
    }
    println!(
        "miss after delete: {:?}",
        cache.get("example:user:123").await?
    );
    cache.delete("example:user:123:profile").await?;
    Ok(())
}
