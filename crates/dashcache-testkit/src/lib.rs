//! Test support for dashcache: real servers, never mocks.
//!
//! - [`RedisServer`] spawns a private `redis-server` on a free loopback port in a temporary
//!   directory, waits until it answers, and kills it on drop. Fault tests freeze it
//!   (`SIGSTOP`), kill it and restart it on the same port.
//! - [`conformance`] is the one suite every [`Cache`](dashcache::Cache) backend must pass.
//!
//! Tests never touch the machine's shared Redis on port 6379.

// This crate is test support: a failed assertion or a server that will not start is reported by
// panicking, which is how a test fails.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod cluster;
pub mod conformance;
pub mod load;
mod postgres;
mod server;

pub use cluster::RedisCluster;
pub use postgres::{PgSchema, PostgresServer};
pub use server::{RedisServer, redis_server_binary};

/// The library under test, re-exported for [`on_every_backend!`].
pub use dashcache;

/// A `RedisCache` for `server` with a deadline generous enough for a loaded 2-core CI machine
/// (only the deadline and breaker tests use the production defaults).
///
/// # Panics
/// When the server does not answer; the message carries its log.
pub async fn redis_cache(server: &RedisServer) -> dashcache::RedisCache {
    dashcache::RedisCache::builder(server.url())
        .timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()))
}

/// A cluster `RedisCache` for `cluster`, with the same generous deadline as [`redis_cache`].
///
/// # Panics
/// When the cluster does not answer.
pub async fn cluster_cache(cluster: &RedisCluster) -> dashcache::RedisCache {
    dashcache::RedisCache::builder(cluster.url())
        .timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs each scenario (`async fn(Arc<dyn Cache>)`) against every backend — the embedded cache,
/// one Redis, a Redis Cluster: one test module per scenario, with a test per backend, each with
/// a cache (and servers) of its own.
///
/// ```ignore
/// async fn round_trip(cache: Arc<dyn Cache>) { /* … */ }
/// dashcache_testkit::on_every_backend!(round_trip);
/// ```
#[macro_export]
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    let cache = ::std::sync::Arc::new($crate::dashcache::MemoryCache::new());
                    super::$scenario(cache).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    let server = $crate::RedisServer::start();
                    let cache = ::std::sync::Arc::new($crate::redis_cache(&server).await);
                    super::$scenario(cache).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() {
                    let cluster = $crate::RedisCluster::start();
                    let cache = ::std::sync::Arc::new($crate::cluster_cache(&cluster).await);
                    super::$scenario(cache).await;
                }
            }
        )*
    };
}
