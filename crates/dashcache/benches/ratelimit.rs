//! Rate-limit decisions per second, in one run, interleaved: `RateLimiter` on Redis against the
//! raw `redis` client running the same script by EVALSHA (and, on one hot key, with
//! reservations, which answer most checks in process); `RateLimiter` in memory against the
//! `governor` crate's keyed limiter, on one hot key and on 10 000 keys.
//!
//! Run: `cargo bench -p dashcache --bench ratelimit`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashcache::Keys;
use dashcache::ratelimit::{RateLimiter, RedisBuckets, Reservations, Rule};
use dashcache_testkit::load::{Op, Plan, median, rates};
use dashcache_testkit::{RedisServer, redis_cache};
use governor::{Quota, RateLimiter as Governor};

const KEYS: usize = 10_000;

fn main() {
    dashcache_testkit::load::bench_main(0, run);
}

fn ids() -> Arc<Vec<String>> {
    Arc::new(
        (0..KEYS)
            .map(|i| format!("198.51.{}.{}", i / 256, i % 256))
            .collect(),
    )
}

async fn run() {
    let keys = Keys::new("bench", ["ratelimit"]).unwrap();
    // Large enough that nothing is denied during the run: both sides do the full work.
    let rule = Rule::new("api", 1_000_000_000, 1_000_000_000, Duration::from_secs(1)).unwrap();
    let ids = ids();
    println!(
        "Rate-limit decisions ({} cores, {} interleaved rounds of {:?})",
        std::thread::available_parallelism().map_or(0, usize::from),
        Plan::default().rounds,
        Plan::default().round
    );
    println!(
        "| store | keys | concurrency | dashcache decisions/s | baseline | baseline decisions/s | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");

    let server = RedisServer::start();
    let cache = redis_cache(&server).await;
    let redis_limiter = Arc::new(RateLimiter::redis(cache.clone(), keys.clone()));
    let reserving = Arc::new(RateLimiter::new(
        Arc::new(RedisBuckets::new(cache).with_reservations(Reservations::default())),
        keys.clone(),
    ));
    let raw = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let script = Arc::new(redis::Script::new(RedisBuckets::SCRIPT));
    for (store, n_keys, concurrency) in [
        ("redis", 1usize, 1usize),
        ("redis", KEYS, 1),
        ("redis", KEYS, 64),
        ("redis, reservations", 1, 64),
    ] {
        let (limiter, rule, our_ids) = (
            if store == "redis" {
                Arc::clone(&redis_limiter)
            } else {
                Arc::clone(&reserving)
            },
            Arc::new(rule.clone()),
            Arc::clone(&ids),
        );
        let ours: Op = Arc::new(move |i| {
            let (limiter, rule, ids) = (
                Arc::clone(&limiter),
                Arc::clone(&rule),
                Arc::clone(&our_ids),
            );
            Box::pin(async move {
                assert!(
                    limiter
                        .check(&rule, &ids[i % n_keys])
                        .await
                        .unwrap()
                        .allowed
                );
            })
        });
        let (raw, script, raw_ids) = (raw.clone(), Arc::clone(&script), Arc::clone(&ids));
        let baseline: Op = Arc::new(move |i| {
            let (mut raw, script, ids) = (raw.clone(), Arc::clone(&script), Arc::clone(&raw_ids));
            Box::pin(async move {
                let key = format!("bench:ratelimit:raw:{}", ids[i % n_keys]);
                let mut invocation = script.key(key);
                invocation
                    .arg(1_000_000_000u64)
                    .arg(1_000_000_000u64)
                    .arg(1000u64)
                    .arg(1u64)
                    .arg(1u8)
                    .arg("")
                    .arg(1000u64);
                let (allowed, ..): (u8, u64, u64, u64, u64) =
                    invocation.invoke_async(&mut raw).await.unwrap();
                assert_eq!(allowed, 1);
            })
        });
        row(
            store,
            n_keys,
            concurrency,
            "raw EVALSHA",
            &rates(&[ours, baseline], concurrency).await,
        );
    }

    // Shared handles, as on the governor side: an op clones an `Arc`, not a rule's name.
    let memory_limiter = Arc::new(RateLimiter::memory(keys));
    let rule = Arc::new(rule);
    for n_keys in [1usize, KEYS] {
        let (limiter, rule, our_ids) = (
            Arc::clone(&memory_limiter),
            Arc::clone(&rule),
            Arc::clone(&ids),
        );
        let ours: Op = Arc::new(move |i| {
            let (limiter, rule, ids) = (
                Arc::clone(&limiter),
                Arc::clone(&rule),
                Arc::clone(&our_ids),
            );
            Box::pin(async move {
                assert!(
                    limiter
                        .check(&rule, &ids[i % n_keys])
                        .await
                        .unwrap()
                        .allowed
                );
            })
        });
        let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap());
        let governor = Arc::new(Governor::keyed(quota));
        let gov_ids = Arc::clone(&ids);
        let baseline: Op = Arc::new(move |i| {
            let (governor, ids) = (Arc::clone(&governor), Arc::clone(&gov_ids));
            Box::pin(async move {
                assert!(governor.check_key(&ids[i % n_keys]).is_ok());
            })
        });
        row(
            "memory",
            n_keys,
            1,
            "governor keyed",
            &rates(&[ours, baseline], 1).await,
        );
    }
}

fn row(store: &str, keys: usize, concurrency: usize, baseline: &str, rates: &[[f64; 2]]) {
    println!(
        "| {store} | {keys} | {concurrency} | {:.0} | {baseline} | {:.0} | {:.2} |",
        median(rates.iter().map(|r| r[0]).collect()),
        median(rates.iter().map(|r| r[1]).collect()),
        median(rates.iter().map(|r| r[0] / r[1]).collect()),
    );
}
