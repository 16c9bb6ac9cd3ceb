//! Redis Sentinel: the conformance suite through `redis+sentinel://`, and a master killed under
//! load — the same client fails fast while no master is known, then finds the promoted replica
//! by itself. The time until writes succeed again is printed (the README reports it).

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // a panic is how a test fails

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dashcache::{Cache, ErrorKind, RedisCache, Ttl};
use dashcache_testkit::RedisSentinels;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_through_sentinel() {
    let set = tokio::task::block_in_place(RedisSentinels::start);
    let cache = RedisCache::builder(set.url()).connect().await.unwrap();
    dashcache_testkit::conformance::run(Arc::new(cache.clone())).await;
    // The hybrid tracks the master the sentinels name.
    let hybrid = dashcache_testkit::hybrid_cache(cache).await;
    dashcache_testkit::conformance::run(Arc::new(hybrid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_the_same_client_follows() {
    let mut set = tokio::task::block_in_place(RedisSentinels::start);
    let deadline = Duration::from_millis(250);
    let cache = RedisCache::builder(set.url())
        .timeout(deadline)
        .connect()
        .await
        .unwrap();
    cache
        .set("before", "kept".into(), Ttl::secs(600))
        .await
        .unwrap();
    // The replica must have the key before the master dies, or the test proves nothing of it.
    let replica = set.nodes()[1 - set.master().unwrap()].client();
    let mut raw = replica.get_multiplexed_async_connection().await.unwrap();
    let start = Instant::now();
    loop {
        let v: Option<String> = redis::cmd("GET")
            .arg("before")
            .query_async(&mut raw)
            .await
            .unwrap();
        if v.is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the replica never got the key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A hybrid over the same set must follow the failover too.
    let hybrid = dashcache_testkit::hybrid_cache(cache.clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let cache = cache.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut log = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let ok = cache
                    .set(&format!("w:{i}"), "v".into(), Ttl::secs(600))
                    .await
                    .is_ok();
                log.push((sent, sent.elapsed(), ok));
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    let old = tokio::task::block_in_place(|| set.kill_master());
    let new = tokio::task::block_in_place(|| set.wait_for_new_master(old, Duration::from_secs(30)));
    let promoted_after = killed_at.elapsed();
    // Let the client find it, then keep writing a while on the new master.
    let limit = Instant::now() + Duration::from_secs(20);
    loop {
        if cache.set("probe", "v".into(), Ttl::secs(60)).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < limit,
            "the client never found the new master"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The old master comes back as a replica; the client stays with the new master.
    tokio::task::block_in_place(|| set.restart_node(old));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let log = writer.await.unwrap();

    let failed = log.iter().filter(|(_, _, ok)| !ok).count();
    let last_failure = log
        .iter()
        .rposition(|(_, _, ok)| !ok)
        .expect("no write failed: the kill went unnoticed");
    // Writes succeed again from the first success after the last failure, and every write
    // since (the old master's return as a replica included) succeeded.
    let (sent, took, _) = log
        .get(last_failure + 1)
        .copied()
        .expect("no write succeeded after the last failure");
    let recovered = (sent + took).duration_since(killed_at);
    let writing_since = log
        .last()
        .map(|(sent, _, _)| sent.duration_since(killed_at))
        .unwrap_or_default();
    let slowest = log
        .iter()
        .map(|(_, took, _)| *took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "sentinel failover: node {old} killed; node {new} promoted after {promoted_after:?}; \
         writes succeed again {recovered:?} after the kill; {failed} of {} writes failed; \
         slowest write {slowest:?}",
        log.len()
    );
    // Failing fast: no write waits past its deadline (plus a second of slack for a loaded
    // machine: the bound catches a missing deadline).
    assert!(slowest < deadline + Duration::from_secs(1), "{slowest:?}");
    assert!(
        recovered < promoted_after + Duration::from_secs(10),
        "the client took {recovered:?} to follow a promotion at {promoted_after:?}"
    );
    assert!(
        writing_since > recovered + Duration::from_secs(1),
        "too short a run after recovery to show it holds"
    );
    assert_eq!(
        cache.get("before").await.unwrap().as_deref(),
        Some(&b"kept"[..]),
        "a key written before the failover"
    );

    // The hybrid tracks the new master: L1 serves again, and a write made there by another
    // client still reaches it.
    assert!(
        hybrid.ready(Duration::from_secs(15)).await,
        "L1 never served again after the failover: {:?}",
        hybrid.status()
    );
    hybrid.get("before").await.unwrap();
    let master = set.nodes()[new].client();
    let mut raw = master.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg("before")
        .arg("changed")
        .query_async(&mut raw)
        .await
        .unwrap();
    // What counts is when the last read that still answered the old value *began*: on a
    // loaded machine this loop may not run for a while, which is no staleness.
    let start = Instant::now();
    let mut stale_until = Duration::ZERO;
    loop {
        let began = start.elapsed();
        if hybrid.get("before").await.unwrap().as_deref() == Some(&b"changed"[..]) {
            break;
        }
        stale_until = began;
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "L1 never saw the write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stale_until < hybrid.staleness(),
        "L1 answered the old value {stale_until:?} after the write, past the staleness bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_that_require_a_password_are_asked_with_their_credentials() {
    let set = tokio::task::block_in_place(|| {
        RedisSentinels::start_with_sentinel_password("sentinel-secret")
    });
    // Without the sentinels' password no master can be found: a clear error, no panic.
    let refused = RedisCache::builder(set.url())
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let e = refused.ping().await.unwrap_err();
    eprintln!("no credentials: {:?}: {e}", e.kind());
    assert!(!e.to_string().contains("sentinel-secret"), "{e}");
    // It names the sentinels' own settings, not the URL's.
    assert_eq!(e.kind(), ErrorKind::Misconfigured);
    assert!(e.to_string().contains("CACHE_SENTINEL_PASSWORD"), "{e}");
    // A wrong password neither.
    let wrong = RedisCache::builder(set.url())
        .timeout(Duration::from_millis(500))
        .sentinel_credentials(None, "not-it")
        .build()
        .unwrap();
    let e = wrong.ping().await.unwrap_err();
    eprintln!("wrong password: {:?}: {e}", e.kind());
    assert!(!e.to_string().contains("not-it"), "{e}");
    assert!(e.to_string().contains("CACHE_SENTINEL_PASSWORD"), "{e}");
    // With it, the cache works, and the password shows in no description of it.
    let builder = RedisCache::builder(set.url()).sentinel_credentials(None, "sentinel-secret");
    assert!(!format!("{builder:?}").contains("sentinel-secret"));
    let cache = builder.connect().await.unwrap();
    assert!(!format!("{cache:?}").contains("sentinel-secret"));
    cache.set("k", "v".into(), Ttl::secs(60)).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    // Sentinel credentials with a URL that is not a Sentinel set are refused at build.
    let e = RedisCache::builder("redis://127.0.0.1:1")
        .sentinel_credentials(None, "sentinel-secret")
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), dashcache::ErrorKind::InvalidArgument);
}
