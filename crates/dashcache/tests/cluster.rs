//! Redis Cluster: the conformance suite, multi-slot batches, every master swept, and a master
//! killed under load.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashcache::{Cache, ErrorKind, RedisCache, Ttl};
use dashcache_testkit::{RedisCluster, conformance};

async fn cluster_cache(cluster: &RedisCluster, timeout: Duration) -> RedisCache {
    let cache = RedisCache::builder(cluster.url())
        .timeout(timeout)
        .connect()
        .await
        .unwrap();
    assert!(cache.is_cluster());
    cache
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_conforms() {
    let cluster = RedisCluster::start();
    let cache = cluster_cache(&cluster, Duration::from_secs(5)).await;
    conformance::run(Arc::new(cache)).await;
}
