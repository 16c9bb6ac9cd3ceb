//! `Instrumented` and `CacheMetrics`: exact counts per namespace for a scripted sequence, on
//! both backends, and the Prometheus rendering of the export.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashcache::metrics::CacheMetrics;
use dashcache::{Cache, ErrorKind, Instrumented, Keys, MemoryCache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;

fn keys() -> Keys {
    Keys::new("m", ["user", "session", "authz"]).unwrap()
}

/// A fixed sequence with known results; checks every counter afterwards.
async fn scripted(inner: Arc<dyn Cache>) {
    let keys = keys();
    let metrics = CacheMetrics::new(&keys);
    let cache = Instrumented::new(inner, metrics.clone()).with_latency_sampling(1);
    let k = |parts: &[&str]| keys.key(parts.iter().copied()).unwrap();
    let v = || Bytes::from_static(b"v");

    // user: 3 hits, 2 misses, 1 error
    cache
        .set(&k(&["user", "1"]), v(), Ttl::secs(60))
        .await
        .unwrap();
    cache
        .set(&k(&["user", "2"]), v(), Ttl::secs(60))
        .await
        .unwrap();
    cache.get(&k(&["user", "1"])).await.unwrap();
    cache.get(&k(&["user", "3"])).await.unwrap();
    let batch = [k(&["user", "2"]), k(&["user", "4"])];
    cache.get_many(&[&batch[0], &batch[1]]).await.unwrap();
    assert_eq!(cache.take(&k(&["user", "1"])).await.unwrap(), Some(v()));
    cache
        .set_add(&k(&["user", "idx"]), &[v()], Ttl::secs(60))
        .await
        .unwrap();
    let err = cache.get(&k(&["user", "idx"])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType);

    // session: 1 miss, 2 errors (bad input is an error too, never a miss)
    cache.get(&k(&["session", "s1"])).await.unwrap();
    cache
        .set(&k(&["session", "s1"]), v(), Ttl::secs(0))
        .await
        .unwrap_err();
    cache
        .increment(&k(&["session", "s1"]), i64::MAX, None)
        .await
        .unwrap();
    cache
        .increment(&k(&["session", "s1"]), 1, None)
        .await
        .unwrap_err();

    // an undeclared namespace lands in `other`
    cache.get("m:elsewhere:1").await.unwrap();
    cache.get("no-prefix").await.unwrap();

    let user = metrics.snapshot("user");
    assert_eq!((user.hits, user.misses, user.errors), (3, 2, 1), "{user:?}");
    assert!((user.hit_rate() - 0.6).abs() < 1e-12);
    let session = metrics.snapshot("session");
    assert_eq!(
        (session.hits, session.misses, session.errors),
        (0, 1, 2),
        "{session:?}"
    );
    assert_eq!(session.hit_rate(), 0.0);
    assert_eq!(
        metrics.snapshot("authz"),
        Default::default(),
        "untouched namespace"
    );
    let other = metrics.snapshot("other");
    assert_eq!((other.hits, other.misses, other.errors), (0, 2, 0));
    let total = metrics.total();
    assert_eq!((total.hits, total.misses, total.errors), (3, 5, 3));
    assert_eq!(total.operations, 14, "every operation is timed");
    assert!(total.latency_total > Duration::ZERO);
}

/// Reads an in-process cache answers at once are counted exactly but timed one in 16 by
/// default; operations that wait on the backend are all timed.
#[tokio::test]
async fn in_process_reads_are_timed_by_sample_and_counted_exactly() {
    let metrics = CacheMetrics::new(&keys());
    let cache = Instrumented::new(MemoryCache::new(), metrics.clone());
    for _ in 0..64 {
        cache.get("m:user:1").await.unwrap();
    }
    cache
        .set("m:user:1", Bytes::from_static(b"v"), Ttl::secs(60))
        .await
        .unwrap();
    let user = metrics.snapshot("user");
    assert_eq!(user.misses, 64);
    // Four sampled reads (the tick is per thread) and the write.
    assert!((3..=6).contains(&user.operations), "{user:?}");
}

#[tokio::test]
async fn memory_counts_match_the_script() {
    scripted(Arc::new(MemoryCache::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counts_match_the_script() {
    let server = RedisServer::start();
    let cache = RedisCache::builder(server.url())
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    scripted(Arc::new(cache)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backends_count_errors_not_misses() {
    let mut server = RedisServer::start();
    let redis = RedisCache::builder(server.url()).connect().await.unwrap();
    server.kill();
    let metrics = CacheMetrics::new(&keys());
    let cache = Instrumented::new(redis, metrics.clone());
    for _ in 0..10 {
        assert!(cache.get("m:user:1").await.is_err());
    }
    let user = metrics.snapshot("user");
    assert_eq!((user.errors, user.misses, user.hits), (10, 0, 0));
}

#[tokio::test]
async fn the_export_renders_in_prometheus() {
    let keys = keys();
    let metrics = CacheMetrics::new(&keys);
    let cache = Instrumented::new(MemoryCache::new(), metrics.clone()).with_latency_sampling(1);
    cache
        .set("m:user:1", Bytes::from_static(b"v"), Ttl::secs(60))
        .await
        .unwrap();
    cache.get("m:user:1").await.unwrap();
    cache.get("m:user:2").await.unwrap();
    cache.get("m:session:1").await.unwrap();

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || metrics.publish());
    let text = handle.render() + &metrics.render_histograms();
    dashcache_testkit::prometheus::check_text_format(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        text.matches("# TYPE dashcache_cache_operation_duration_seconds histogram")
            .count(),
        1,
        "{text}"
    );
    for line in [
        "dashcache_cache_hits_total{namespace=\"user\"} 1",
        "dashcache_cache_misses_total{namespace=\"user\"} 1",
        "dashcache_cache_misses_total{namespace=\"session\"} 1",
        "dashcache_cache_errors_total{namespace=\"user\"} 0",
        "dashcache_cache_operation_duration_seconds_count{namespace=\"user\"} 3",
        "dashcache_cache_operation_duration_seconds_bucket{namespace=\"user\",le=\"+Inf\"} 3",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    // Publishing again reports totals, not sums of totals.
    cache.get("m:user:1").await.unwrap();
    metrics::with_local_recorder(&recorder, || metrics.publish());
    let text = handle.render();
    assert!(
        text.contains("dashcache_cache_hits_total{namespace=\"user\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn latency_sampling_times_one_operation_in_n_and_counts_all() {
    let keys = keys();
    for (every, timed) in [(1, 100), (4, 25), (0, 0)] {
        let metrics = CacheMetrics::new(&keys);
        let cache =
            Instrumented::new(MemoryCache::new(), metrics.clone()).with_latency_sampling(every);
        for _ in 0..100 {
            cache.get("m:user:1").await.unwrap();
        }
        let user = metrics.snapshot("user");
        assert_eq!(user.misses, 100, "counts stay exact with sampling {every}");
        assert_eq!(user.operations, timed, "sampling {every}");
    }
}
