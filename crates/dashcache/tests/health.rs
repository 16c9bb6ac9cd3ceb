//! The health probe tells up, slow and down apart, on a real server.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::time::Duration;

use dashcache::RedisCache;
use dashcache::health::{CacheStatus, probe};
use dashcache_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_slow_and_down_are_told_apart() {
    let mut server = RedisServer::start_with_args(&["--enable-debug-command", "yes"]);
    let cache = RedisCache::builder(server.url())
        .timeout(Duration::from_millis(1000))
        .connect()
        .await
        .unwrap();

    let up = probe(&cache, Duration::from_millis(100)).await;
    assert_eq!(up.status, CacheStatus::Up, "{up:?}");
    assert!(up.latency.is_some());

    // A server busy for 300 ms answers late: slow, not down.
    let busy = {
        let client = server.client();
        tokio::spawn(async move {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let () = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg("0.3")
                .query_async(&mut conn)
                .await
                .unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let slow = probe(&cache, Duration::from_millis(100)).await;
    busy.await.unwrap();
    assert_eq!(slow.status, CacheStatus::Slow, "{slow:?}");
    assert!(slow.latency.unwrap() > Duration::from_millis(100));

    // Frozen: no answer within the deadline.
    server.freeze();
    let frozen = probe(&cache, Duration::from_millis(100)).await;
    server.thaw();
    assert_eq!(frozen.status, CacheStatus::Down, "{frozen:?}");
    assert_eq!(frozen.error, Some("cache_timeout"));

    // Dead: refused.
    server.kill();
    let dead = probe(&cache, Duration::from_millis(100)).await;
    assert_eq!(dead.status, CacheStatus::Down, "{dead:?}");
    assert_eq!(dead.error, Some("cache_unavailable"));
    assert!(!dead.is_available());

    let json = serde_json::to_value(&dead).unwrap();
    assert_eq!(json["status"], "down");
    assert_eq!(json["error"], "cache_unavailable");
}
