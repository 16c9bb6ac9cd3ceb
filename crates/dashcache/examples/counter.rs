//! The guide's "N requests per minute" counter, done right: the TTL is set in the same atomic
//! step as the first increment, so a crash between the two can never leave a counter that
//! never expires (the original called INCR, then EXPIRE only when the count was 1).
//!
//! `cargo run -p dashcache --example counter`

use dashcache::{Cache, Keys, MemoryCache, Ttl};

const LIMIT: i64 = 5;

/// Whether this request is within the limit; fails open when the cache fails.
async fn allow(cache: &dyn Cache, keys: &Keys, user: &str, endpoint: &str) -> bool {
    let Ok(key) = keys.key(["rate_limit", user, endpoint]) else {
        return false;
    };
    match cache.increment(&key, 1, Some(Ttl::secs(60))).await {
        Ok(count) => count <= LIMIT,
        Err(e) => {
            eprintln!("rate limit check failed open: {e}");
            true
        }
    }
}

#[tokio::main]
async fn main() -> dashcache::Result<()> {
    let cache = MemoryCache::new();
    let keys = Keys::new("example", ["rate_limit"])?;
    for i in 1..=7 {
        let ok = allow(&cache, &keys, "user-42", "accounts").await;
        println!("request {i}: {}", if ok { "allowed" } else { "limited" });
    }
    Ok(())
}
