//! The guide's basic operations: set with a TTL, get (hit, miss), delete, typed JSON, and what
//! to do with an error (log it and carry on: the cache is never the source of truth).
//!
//! `cargo run -p dashcache --example basic` (embedded cache), or with
//! `REDIS_URL=redis://127.0.0.1:6379` to run it against Redis.

mod common;

use dashcache::{Cache, CacheExt, Ttl};

async fn run() -> dashcache::Result<()> {
    // The cache a service holds: Redis when `REDIS_URL` is set, else the embedded one.
    let cache = common::cache().await?;

    cache
        .set_str("ex-basic:user:123", "John Doe", Ttl::secs(3600))
        .await?;

    match cache.get_str("ex-basic:user:123").await {
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
        .set_json("ex-basic:user:123:profile", &profile, Ttl::secs(3600))
        .await?;
    let back: Option<Profile> = cache.get_json("ex-basic:user:123:profile").await?;
    println!("profile: {back:?}");

    if cache.delete("ex-basic:user:123").await? {
        println!("deleted");
    }
    println!(
        "miss after delete: {:?}",
        cache.get("ex-basic:user:123").await?
    );
    cache.delete("ex-basic:user:123:profile").await?;
    common::clean_up(cache.as_ref(), "ex-basic").await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
