//! The guide's health check, made honest: a dead cache shows as down (with why), a slow one as
//! slow, so `/health` reports a degraded service instead of hiding it behind fail-open.
//!
//! `cargo run -p dashcache --example health` (try `REDIS_URL=redis://127.0.0.1:1` for a dead one).

mod common;

use std::sync::Arc;
use std::time::Duration;

use dashcache::health::{CacheStatus, probe};
use dashcache::{Cache, CacheSettings};

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Settings from the environment (and CACHE_CONFIG_FILE): every bad variable is reported at
    // once, before anything starts.
    let settings = CacheSettings::from_env()?;
    let cache: Arc<dyn Cache> = match settings.redis_cache_builder() {
        Some(redis) => Arc::new(redis.build()?),
        None => Arc::new(settings.memory_cache_builder().build()),
    };
    let report = probe(cache.as_ref(), Duration::from_millis(50)).await;
    let service = match report.status {
        CacheStatus::Up => "healthy",
        // Still serving from the database, only slower.
        _ => "degraded",
    };
    println!(
        "{}",
        serde_json::json!({ "status": service, "cache": report })
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
