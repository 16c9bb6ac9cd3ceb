//! The version check on real servers: `connect` reads what the server runs, and the version
//! it reports is the one `redis-server --version` prints.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // a panic is how a test fails

use dashcache::{Cache, RedisCache};
use dashcache_testkit::{RedisCluster, RedisServer};

fn installed_version() -> String {
    let out = std::process::Command::new(dashcache_testkit::redis_server_binary())
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_version_is_read_at_connect() {
    let server = RedisServer::start();
    let cache = RedisCache::connect(server.url()).await.unwrap();
    assert_eq!(cache.check_version().await.unwrap(), installed_version());
    // Once checked, a ping is a PING again.
    cache.ping().await.unwrap();

    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let cache = RedisCache::connect(cluster.url()).await.unwrap();
    assert_eq!(cache.check_version().await.unwrap(), installed_version());
}
