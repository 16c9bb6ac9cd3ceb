//! The conformance suite (dashcache-testkit) on every backend.

#![allow(clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::time::Duration;

use dashcache::{MemoryCache, RedisCache};
use dashcache_testkit::{RedisServer, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cache_conforms() {
    conformance::run(Arc::new(MemoryCache::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_conforms() {
    let server = RedisServer::start();
    // A loaded 2-core CI machine can stall for longer than the production default; only the
    // deadline and breaker tests use the defaults.
    let cache = RedisCache::builder(server.url())
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    conformance::run(Arc::new(cache)).await;
}
