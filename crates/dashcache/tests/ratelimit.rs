//! The token bucket on both stores: the guide's behaviours, exact retry times, atomicity under
//! contention, memory and Redis deciding alike, surviving a flushed script cache and a
//! restart; and the fixed-window counter.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::time::Duration;

use dashcache::ratelimit::{FixedWindow, RateLimiter, Rule};
use dashcache::{Cache, KeyTtl, Keys, MemoryCache};
use dashcache_testkit::{RedisServer, redis_cache};
use futures::future::join_all;
use proptest::prelude::*;

fn keys() -> Keys {
    Keys::new("t", ["ratelimit", "rate_limit"]).unwrap()
}

/// The limiter of a backend: buckets in memory for the embedded cache, on Redis otherwise.
fn limiter(backend: &dashcache_testkit::Backend) -> RateLimiter {
    match backend.redis_cache() {
        Some(cache) => RateLimiter::redis(cache, keys()),
        None => RateLimiter::memory(keys()),
    }
}

const T0: u64 = 1_700_000_000_000;

async fn the_guides_bucket_behaviours(limiter: RateLimiter) {
    // 10 requests, refilled at 10 a minute: one token every 6 s.
    let rule = Rule::new("api", 10, 10, Duration::from_secs(60)).unwrap();
    let first = limiter.check_at(&rule, "c1", T0).await.unwrap();
    assert!(first.allowed);
    assert_eq!((first.limit, first.remaining), (10, 9));
    for expected in (0..9).rev() {
        let d = limiter.check_at(&rule, "c1", T0).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, expected, "counts down");
    }
    let denied = limiter.check_at(&rule, "c1", T0 + 1_500).await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    assert_eq!(
        denied.retry_after,
        Duration::from_millis(4_500),
        "exact to the ms"
    );
    assert_eq!(
        denied.reset_after,
        Duration::from_millis(58_500),
        "until full again"
    );
    // A denied check took nothing: exactly at the promised time it passes.
    assert!(
        !limiter
            .check_at(&rule, "c1", T0 + 5_999)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        limiter
            .check_at(&rule, "c1", T0 + 6_000)
            .await
            .unwrap()
            .allowed
    );
    // Refill over time, capped at the capacity after a long idle.
    let later = limiter
        .remaining_at(&rule, "c1", T0 + 30_000)
        .await
        .unwrap();
    assert_eq!(later.remaining, 4);
    let idle = limiter
        .remaining_at(&rule, "c1", T0 + 3_600_000)
        .await
        .unwrap();
    assert_eq!(idle.remaining, 10);
    // Other clients have their own buckets, and hostile ids are just ids.
    for id in ["c2", "*", "c1:x", "", "with space"] {
        assert_eq!(
            limiter.check_at(&rule, id, T0).await.unwrap().remaining,
            9,
            "{id:?}"
        );
    }
}

async fn remaining_does_not_consume_and_reset_refills(limiter: RateLimiter) {
    let rule = Rule::new("api", 3, 1, Duration::from_secs(60)).unwrap();
    for _ in 0..5 {
        assert_eq!(limiter.remaining(&rule, "c1").await.unwrap().remaining, 3);
    }
    for _ in 0..3 {
        limiter.check(&rule, "c1").await.unwrap();
    }
    assert!(!limiter.check(&rule, "c1").await.unwrap().allowed);
    limiter.reset(&rule, "c1").await.unwrap();
    let d = limiter.check(&rule, "c1").await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 2);
}

async fn costs_above_one(limiter: RateLimiter) {
    let rule = Rule::new("export", 10, 1, Duration::from_secs(1))
        .unwrap()
        .with_cost(4)
        .unwrap();
    assert_eq!(
        limiter.check_at(&rule, "c1", T0).await.unwrap().remaining,
        6
    );
    assert_eq!(
        limiter.check_at(&rule, "c1", T0).await.unwrap().remaining,
        2
    );
    let denied = limiter.check_at(&rule, "c1", T0).await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 2, "a denied check takes nothing");
    assert_eq!(
        denied.retry_after,
        Duration::from_secs(2),
        "two more tokens at one a second"
    );
}

async fn a_thousand_concurrent_checks_allow_exactly_the_capacity(limiter: RateLimiter) {
    let rule = Rule::new("burst", 100, 1, Duration::from_secs(3600)).unwrap();
    let checks = (0..1000).map(|_| {
        let (limiter, rule) = (limiter.clone(), rule.clone());
        tokio::spawn(async move { limiter.check(&rule, "hot").await })
    });
    let allowed = join_all(checks)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().as_ref().unwrap().allowed)
        .count();
    assert_eq!(allowed, 100);
}

dashcache_testkit::on_every_backend!(|backend| super::limiter(&backend);
    the_guides_bucket_behaviours,
    remaining_does_not_consume_and_reset_refills,
    costs_above_one,
    a_thousand_concurrent_checks_allow_exactly_the_capacity,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_or_a_restart_does_not_switch_limiting_off() {
    let mut server = RedisServer::start();
    let limiter = RateLimiter::redis(redis_cache(&server).await, keys());
    let rule = Rule::new("login", 3, 1, Duration::from_secs(3600)).unwrap();
    for _ in 0..3 {
        assert!(limiter.check(&rule, "c1").await.unwrap().allowed);
    }
    let () = server.command(&[b"SCRIPT", b"FLUSH"]).await;
    let after_flush = limiter.check(&rule, "c1").await.unwrap();
    assert!(!after_flush.allowed, "still enforced after SCRIPT FLUSH");

    // A restarted server lost its buckets (they start full) but still limits.
    server.restart();
    let mut decisions = Vec::new();
    let start = std::time::Instant::now();
    while decisions.len() < 4 {
        match limiter.check(&rule, "c1").await {
            Ok(d) => decisions.push(d.allowed),
            Err(_) if start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no decision after the restart: {e}"),
        }
    }
    assert_eq!(decisions, vec![true, true, true, false]);
}

/// A partition keeps Redis' buckets, unlike a kill: what the local fallback admits meanwhile is
/// per instance and bounded by the rule, and once the link heals the shared bucket decides
/// again — still as empty as the partition found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_falls_back_locally_and_the_shared_bucket_outlives_it() {
    let server = RedisServer::start();
    let proxy =
        dashcache_testkit::Proxy::start(format!("127.0.0.1:{}", server.port()).parse().unwrap());
    let cache = dashcache::RedisCache::builder(proxy.redis_url())
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let limiter = RateLimiter::redis(cache, keys());
    let rule = Rule::new("login", 3, 1, Duration::from_secs(3600)).unwrap();
    for _ in 0..3 {
        assert!(limiter.check(&rule, "c1").await.unwrap().allowed);
    }
    assert!(!limiter.check(&rule, "c1").await.unwrap().allowed);
    proxy.blackhole();
    // The store cannot answer: a rule falling back to local buckets gets this instance's own
    // (full at first, then as strict).
    assert!(limiter.check(&rule, "c1").await.is_err());
    let local: Vec<bool> = (0..4)
        .map(|_| limiter.check_locally(&rule, "c1").allowed)
        .collect();
    assert_eq!(local, vec![true, true, true, false]);
    proxy.restore();
    let start = std::time::Instant::now();
    let decision = loop {
        match limiter.check(&rule, "c1").await {
            Ok(d) => break d,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(10), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        !decision.allowed,
        "the shared bucket kept its state through the partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_expire_once_they_would_be_full() {
    let server = RedisServer::start();
    let cache = redis_cache(&server).await;
    let limiter = RateLimiter::redis(cache.clone(), keys());
    let rule = Rule::new("api", 10, 10, Duration::from_secs(10)).unwrap();
    limiter.check(&rule, "c1").await.unwrap();
    // One token used, refilled in 1 s: the bucket lives 1 s + a 1 s margin (not the 10 s of
    // a full refill). The lower bound leaves a loaded machine time between the two calls.
    match cache.ttl("t:ratelimit:api:c1").await.unwrap() {
        KeyTtl::Expires(d) => {
            assert!(
                d > Duration::from_millis(500) && d <= Duration::from_secs(2),
                "{d:?}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// Memory and Redis, driven with the same costs at the same instants, decide the same.
mod differential {
    use super::*;

    struct Fixture {
        rt: tokio::runtime::Runtime,
        _server: RedisServer,
        redis: RateLimiter,
    }

    fn fixture() -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = RedisServer::start();
        let cache = rt.block_on(redis_cache(&server));
        Fixture {
            rt,
            redis: RateLimiter::redis(cache, keys()),
            _server: server,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn memory_and_redis_decide_alike(
            capacity in 1u64..50,
            refill in 1u64..20,
            per_ms in 1u64..120_000,
            steps in prop::collection::vec((0u64..50_000, 1u64..50), 1..60),
            case in any::<u64>(),
        ) {
            thread_local! {
                static FIXTURE: Fixture = fixture();
            }
            let memory = RateLimiter::memory(keys());
            FIXTURE.with(|f| {
                f.rt.block_on(async {
                    let id = format!("case-{case}");
                    let mut now = T0;
                    for (i, (advance, cost)) in steps.iter().enumerate() {
                        now += advance;
                        let cost = (*cost).min(capacity);
                        let rule = Rule::new("p", capacity, refill, Duration::from_millis(per_ms))
                            .unwrap()
                            .with_cost(cost)
                            .unwrap();
                        let m = memory.check_at(&rule, &id, now).await.unwrap();
                        let r = f.redis.check_at(&rule, &id, now).await.unwrap();
                        assert_eq!(m, r, "step {i} at +{} ms, cost {cost}", now - T0);
                    }
                    f.redis.reset(&Rule::new("p", 1, 1, Duration::from_secs(1)).unwrap(), &id).await.unwrap();
                });
            });
        }
    }
}

async fn fixed_window(cache: Arc<dyn Cache>) {
    let window = FixedWindow::new(Arc::clone(&cache), keys(), "rate_limit");
    for n in 1..=3 {
        let d = window
            .hit("u1:accounts", 3, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.count, n);
    }
    let over = window
        .hit("u1:accounts", 3, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!over.allowed);
    assert_eq!(over.count, 4);
    // The window's TTL was set with the first hit, in the same step.
    let left = window.resets_in("u1:accounts").await.unwrap();
    assert!(
        left > Duration::from_secs(55) && left <= Duration::from_secs(60),
        "{left:?}"
    );
    assert!(
        window
            .hit("u2:accounts", 3, Duration::from_secs(60))
            .await
            .unwrap()
            .allowed
    );
    // A window ends.
    window
        .hit("u3", 1, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(
        !window
            .hit("u3", 1, Duration::from_millis(100))
            .await
            .unwrap()
            .allowed
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        window
            .hit("u3", 1, Duration::from_millis(100))
            .await
            .unwrap()
            .allowed
    );
}

#[tokio::test]
async fn fixed_window_in_memory() {
    fixed_window(Arc::new(MemoryCache::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_window_on_redis() {
    let server = RedisServer::start();
    fixed_window(Arc::new(redis_cache(&server).await)).await;
}
