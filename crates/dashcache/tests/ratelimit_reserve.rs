//! Reservations on Redis buckets: hot buckets answered in process, and still one limit.
//! Several instances (separate connections) never admit more than the bucket gives out; a
//! client slower than the hold is checked token by token; unused tokens come back exactly.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::time::Duration;

use dashcache::Clock;
use dashcache::Keys;
use dashcache::ratelimit::{RateLimiter, RedisBuckets, Reservations, Rule};
use dashcache_testkit::{RedisServer, redis_cache};

fn keys() -> Keys {
    Keys::new("t", ["ratelimit"]).unwrap()
}

async fn reserving(
    server: &RedisServer,
    reservations: Reservations,
) -> (RateLimiter, RedisBuckets) {
    let buckets = RedisBuckets::new(redis_cache(server).await).with_reservations(reservations);
    let limiter = RateLimiter::new(Arc::new(buckets.clone()), keys());
    (limiter, buckets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_reservations_never_admit_more_than_the_bucket() {
    let server = RedisServer::start();
    // 640 an hour: a reservation takes at most 640 / 16 = 40 checks' worth; under a second of
    // test, the refill adds less than one token.
    let rule = Arc::new(Rule::new("hot", 640, 640, Duration::from_secs(3600)).unwrap());
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(reserving(&server, Reservations::default()).await);
    }
    let mut tasks = Vec::new();
    for (limiter, _) in &instances {
        for _ in 0..8 {
            let limiter = limiter.clone();
            let rule = Arc::clone(&rule);
            tasks.push(tokio::spawn(async move {
                let mut allowed = 0u64;
                for _ in 0..100 {
                    if limiter.check(&rule, "client").await.unwrap().allowed {
                        allowed += 1;
                    }
                }
                allowed
            }));
        }
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.unwrap();
    }
    let stats: Vec<_> = instances
        .iter()
        .map(|(_, buckets)| buckets.reservation_stats().unwrap())
        .collect();
    // 2 400 checks for 640 tokens: never more than the bucket (one more for the refill while
    // the test ran), and only what reservations still hold (given back later) goes unused.
    assert!(allowed <= 641, "{allowed} admitted: {stats:?}");
    assert!(allowed >= 640 - 3 * 40, "{allowed} admitted: {stats:?}");
    let local: u64 = stats.iter().map(|s| s.answered_locally).sum();
    let refused: u64 = stats.iter().map(|s| s.refused_locally).sum();
    let takes: u64 = stats.iter().map(|s| s.store_takes).sum();
    assert_eq!(local + refused + takes, 2400, "{stats:?}");
    assert!(local > 0, "hot buckets are answered in process: {stats:?}");
    assert!(
        refused > 0,
        "and so are refusals of an empty one: {stats:?}"
    );
    // Conservation: what was admitted, what Redis still has and what the instances hold
    // (their `remaining` is Redis's plus their own) add up to the bucket.
    let plain = RateLimiter::redis(redis_cache(&server).await, keys());
    let in_redis = plain.remaining(&rule, "client").await.unwrap().remaining;
    let mut held = 0;
    for (limiter, _) in &instances {
        let seen = limiter.remaining(&rule, "client").await.unwrap().remaining;
        held += seen.saturating_sub(in_redis);
    }
    let total = allowed + in_redis + held;
    assert!(
        (639..=641).contains(&total),
        "{allowed} admitted + {in_redis} in Redis + {held} held: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slower_than_the_hold_is_checked_token_by_token() {
    let server = RedisServer::start();
    let clock = Clock::manual();
    let (limiter, buckets) =
        reserving(&server, Reservations::default().with_clock(clock.clone())).await;
    let rule = Rule::new("slow", 64, 64, Duration::from_secs(3600)).unwrap();
    for i in 0..64 {
        let decision = limiter.check(&rule, "client").await.unwrap();
        assert!(decision.allowed, "check {i}");
        assert_eq!(decision.remaining, 63 - i, "check {i}");
        clock.advance(Duration::from_millis(51));
    }
    assert!(!limiter.check(&rule, "client").await.unwrap().allowed);
    let stats = buckets.reservation_stats().unwrap();
    assert_eq!(
        (stats.reserved, stats.answered_locally),
        (0, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_tokens_are_given_back_exactly() {
    let server = RedisServer::start();
    let clock = Clock::manual();
    let (limiter, buckets) =
        reserving(&server, Reservations::default().with_clock(clock.clone())).await;
    let plain = RateLimiter::redis(redis_cache(&server).await, keys());
    // 1 600 an hour: batches up to 64; the refill adds under a token while the test runs.
    let rule = Rule::new("burst", 1600, 1600, Duration::from_secs(3600)).unwrap();
    for _ in 0..20 {
        assert!(limiter.check(&rule, "client").await.unwrap().allowed);
    }
    // Batches of 1, 2, 4, 8 and 16 took 31; 11 are held.
    assert_eq!(
        plain.remaining(&rule, "client").await.unwrap().remaining,
        1569
    );
    assert_eq!(
        limiter.remaining(&rule, "client").await.unwrap().remaining,
        1580
    );
    // The hold runs out: the next check gives the 11 back and takes a halved batch of 8.
    clock.advance(Duration::from_millis(50));
    let decision = limiter.check(&rule, "client").await.unwrap();
    assert_eq!(decision.remaining, 1579, "21 checks made");
    assert_eq!(
        plain.remaining(&rule, "client").await.unwrap().remaining,
        1572
    );
    let stats = buckets.reservation_stats().unwrap();
    assert_eq!(stats.given_back, 11, "{stats:?}");
    assert_eq!(stats.reserved, 1 + 3 + 7 + 15 + 7, "{stats:?}");
    // A reset drops the reservation with the bucket.
    limiter.reset(&rule, "client").await.unwrap();
    assert_eq!(
        limiter.remaining(&rule, "client").await.unwrap().remaining,
        1600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_buckets_stay_exact_under_contention() {
    let server = RedisServer::start();
    let (a, _) = reserving(&server, Reservations::default()).await;
    let (b, stats) = reserving(&server, Reservations::default()).await;
    // Under 32 checks a bucket is never reserved: the login rule of the service is exact.
    let rule = Arc::new(Rule::per_minute("login", 5).unwrap());
    let mut tasks = Vec::new();
    for limiter in [a, b] {
        for _ in 0..4 {
            let limiter = limiter.clone();
            let rule = Arc::clone(&rule);
            tasks.push(tokio::spawn(async move {
                let mut allowed = 0u64;
                for _ in 0..10 {
                    allowed += u64::from(limiter.check(&rule, "ip").await.unwrap().allowed);
                }
                allowed
            }));
        }
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.unwrap();
    }
    assert_eq!(allowed, 5);
    assert_eq!(stats.reservation_stats().unwrap().reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_an_empty_bucket_is_refused_in_process() {
    let server = RedisServer::start();
    let clock = Clock::manual();
    let (limiter, buckets) =
        reserving(&server, Reservations::default().with_clock(clock.clone())).await;
    let plain = RateLimiter::redis(redis_cache(&server).await, keys());
    // The service's login rule: 5 a minute, too small to reserve for.
    let rule = Rule::per_minute("login", 5).unwrap();
    for _ in 0..5 {
        assert!(limiter.check(&rule, "ip").await.unwrap().allowed);
    }
    let mut refusals = Vec::new();
    for _ in 0..100 {
        let decision = limiter.check(&rule, "ip").await.unwrap();
        assert!(!decision.allowed);
        refusals.push(decision.retry_after);
    }
    let stats = buckets.reservation_stats().unwrap();
    // One round trip learned the refusal; the other 99 repeated it.
    assert_eq!(
        (stats.store_takes, stats.refused_locally),
        (6, 99),
        "{stats:?}"
    );
    assert!(refusals[99] <= refusals[0] && refusals[0] <= Duration::from_secs(12));
    // Refusing took nothing from the bucket.
    assert_eq!(plain.remaining(&rule, "ip").await.unwrap().remaining, 0);
    // After the hold the store is asked again (and still refuses: 12 s per token).
    clock.advance(Duration::from_millis(50));
    assert!(!limiter.check(&rule, "ip").await.unwrap().allowed);
    assert_eq!(buckets.reservation_stats().unwrap().store_takes, 7);
}
