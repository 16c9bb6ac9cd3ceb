//! The guide's "N requests per minute" counter, done right: the TTL is set in the same atomic
//! step as the first increment, so a crash between the two can never leave a counter that
//! never expires (the original called INCR, then EXPIRE only when the count was 1).
//!
//! `cargo run -p dashcache --example counter`

mod common;

use dashcache::{Cache, Keys, Ttl};

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

async fn run() -> dashcache::Result<()> {
    let cache = common::cache().await?;
    let keys = Keys::new("ex-counter", ["rate_limit"])?;
    for i in 1..=7 {
        let ok = allow(cache.as_ref(), &keys, "user-42", "accounts").await;
        println!("request {i}: {}", if ok { "allowed" } else { "limited" });
    }
    common::clean_up(cache.as_ref(), keys.prefix()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
