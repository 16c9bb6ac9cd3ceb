//! Fault tests of `RedisCache` against a real server that is killed, frozen and restarted.
//!
//! These use the production defaults (250 ms deadline, breaker after 5 failures, 500 ms open),
//! because the deadline and the breaker are what they test.

#![allow(clippy::panic, clippy::unwrap_used)] // a panic is how a test fails

use std::time::{Duration, Instant};

use bytes::Bytes;
use dashcache::{Cache, ErrorKind, RedisCache, Ttl};
use dashcache_testkit::RedisServer;

const DEADLINE: Duration = Duration::from_millis(250);

/// What a loaded machine (CI shares two cores with other work) may add to a bound: the bounds
/// here catch a missing deadline or a breaker that never closes, not a slow scheduler.
const SLACK: Duration = Duration::from_secs(1);

/// How long a restarted or thawed server may take to be in use again, with the same margin
/// (the breaker probes after 500 ms; a second is the design's goal, printed by each test).
const RECOVERY: Duration = Duration::from_secs(10);

async fn cache_for(server: &RedisServer) -> RedisCache {
    RedisCache::builder(server.url())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()))
}

/// Calls `get` until it succeeds; how long that took.
async fn time_to_recover(cache: &RedisCache, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if cache.get("fault:probe").await.is_ok() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not recovered within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_fast_as_unavailable_then_recovers_without_a_new_client() {
    let mut server = RedisServer::start();
    let cache = cache_for(&server).await;
    cache
        .set("fault:k", Bytes::from_static(b"v"), Ttl::secs(60))
        .await
        .unwrap();

    server.kill();
    let mut kinds = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let err = cache.get("fault:k").await.unwrap_err();
        let took = start.elapsed();
        assert!(
            took < DEADLINE + SLACK,
            "a dead server must not cost more than the deadline: {took:?}"
        );
        kinds.push(err.kind());
    }
    assert_eq!(kinds[0], ErrorKind::Unavailable, "{kinds:?}");
    assert!(
        kinds
            .iter()
            .all(|k| matches!(k, ErrorKind::Unavailable | ErrorKind::CircuitOpen)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&ErrorKind::CircuitOpen),
        "the breaker opened: {kinds:?}"
    );

    server.restart();
    let took = time_to_recover(&cache, RECOVERY).await;
    println!("recovered after {took:?}");
    // The restarted server is empty, and its script cache too: scripted calls still work.
    assert_eq!(
        cache
            .increment("fault:n", 1, Some(Ttl::secs(60)))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_times_out_then_the_breaker_fails_fast() {
    let server = RedisServer::start();
    let cache = cache_for(&server).await;
    cache
        .set("fault:k", Bytes::from_static(b"v"), Ttl::secs(60))
        .await
        .unwrap();

    server.freeze();
    for i in 0..5 {
        let start = Instant::now();
        let err = cache.get("fault:k").await.unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout, "call {i}: {err}");
        assert!(took >= DEADLINE, "call {i} gave up early: {took:?}");
        assert!(took < DEADLINE + SLACK, "call {i} took {took:?}");
    }
    assert!(cache.is_circuit_open());
    // An open breaker fails without waiting: 100 calls together take a fraction of what one
    // call per deadline would (25 s), whatever the scheduler does meanwhile.
    let start = Instant::now();
    for _ in 0..100 {
        let err = cache.get("fault:k").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    }
    let took = start.elapsed();
    assert!(
        took < DEADLINE * 10,
        "an open breaker must not wait: {took:?}"
    );

    server.thaw();
    let took = time_to_recover(&cache, RECOVERY).await;
    println!("recovered after {took:?}");
    assert_eq!(
        cache.get("fault:k").await.unwrap(),
        Some(Bytes::from_static(b"v"))
    );
    assert!(!cache.is_circuit_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_survive_a_flushed_script_cache() {
    let server = RedisServer::start();
    let cache = cache_for(&server).await;
    let members = [Bytes::from_static(b"m1")];
    assert_eq!(
        cache
            .increment("fault:n", 1, Some(Ttl::secs(60)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        cache
            .set_add("fault:s", &members, Ttl::secs(60))
            .await
            .unwrap(),
        1
    );

    let () = server.command(&[b"SCRIPT", b"FLUSH"]).await;

    assert_eq!(
        cache
            .increment("fault:n", 1, Some(Ttl::secs(60)))
            .await
            .unwrap(),
        2
    );
    let more = [Bytes::from_static(b"m2")];
    assert_eq!(
        cache
            .set_add("fault:s", &more, Ttl::secs(60))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_built_while_redis_is_down_reports_it_and_connects_when_it_is_back() {
    let mut server = RedisServer::start();
    server.kill();

    let connect = RedisCache::connect(server.url()).await;
    assert_eq!(
        connect.err().map(|e| e.kind()),
        Some(ErrorKind::Unavailable)
    );

    let cache = RedisCache::builder(server.url()).build().unwrap();
    assert_eq!(
        cache.ping().await.err().map(|e| e.kind()),
        Some(ErrorKind::Unavailable)
    );

    server.restart();
    let took = time_to_recover(&cache, RECOVERY).await;
    println!("connected after {took:?}");
    assert!(cache.ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_batches_make_no_round_trip() {
    let mut server = RedisServer::start();
    let cache = cache_for(&server).await;
    server.kill();
    // With the server gone, any round trip would fail: these succeed because they make none.
    assert!(cache.get_many(&[]).await.unwrap().is_empty());
    assert_eq!(cache.delete_many(&[]).await.unwrap(), 0);
    cache.set_many(&[], Ttl::secs(60)).await.unwrap();
    assert_eq!(
        cache.set_add("fault:s", &[], Ttl::secs(60)).await.unwrap(),
        0
    );
    assert_eq!(cache.set_remove("fault:s", &[]).await.unwrap(), 0);
    assert!(
        cache.get("fault:k").await.is_err(),
        "the server really is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_any_round_trip() {
    let mut server = RedisServer::start();
    let cache = cache_for(&server).await;
    server.kill();
    let err = cache.get("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
    let err = cache
        .set("k", Bytes::new(), Ttl::secs(0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = cache.delete_pattern("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_not_hidden() {
    let server = RedisServer::start_with_args(&["--requirepass", "right"]);
    let url = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let err = RedisCache::connect(url).await.unwrap_err();
    assert!(
        !err.to_string().contains("wrong"),
        "the password is not echoed: {err}"
    );
    assert!(
        err.kind() == ErrorKind::Misconfigured && err.to_string().contains("authentication"),
        "{err}"
    );
    // A plain URL's failure points at the URL, not at the settings of a Sentinel set.
    assert!(err.to_string().contains("password in the URL"), "{err}");
    assert!(!err.to_string().contains("SENTINEL"), "{err}");
    let ok = RedisCache::connect(format!("redis://:right@127.0.0.1:{}", server.port())).await;
    assert!(ok.is_ok(), "{ok:?}");
}

/// A URL that names a server which is not Redis (here an HTTP one) is a configuration error
/// that says so in a sentence, not the protocol parser's list of unexpected bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_redis_is_named_as_such() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n<html>")
                    .await;
            });
        }
    });
    let err = RedisCache::connect(format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misconfigured, "{err}");
    assert!(err.to_string().contains("not Redis's protocol"), "{err}");
    assert!(!err.to_string().contains("Unexpected"), "{err}");
}

/// Regression: a wrong password was a `Backend` error, which the breaker counted as an answer,
/// so every operation paid a reconnection and an `AUTH` forever. It now opens the breaker,
/// and the breaker's refusals (and the health probe) name the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_password_opens_the_breaker() {
    let server = RedisServer::start_with_args(&["--requirepass", "right"]);
    for url in [
        format!("redis://:wrong@127.0.0.1:{}", server.port()),
        format!("redis://127.0.0.1:{}", server.port()),
    ] {
        let cache = RedisCache::builder(url).build().unwrap();
        for _ in 0..5 {
            let err = cache.get("k").await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Misconfigured, "{err}");
        }
        let err = cache.get("k").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");
        assert!(err.to_string().contains("cache_misconfigured"), "{err}");
        assert!(cache.is_circuit_open());
        let report = dashcache::health::probe(&cache, Duration::from_millis(100)).await;
        assert!(!report.is_available());
        assert!(
            report
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("cache_misconfigured")),
            "{report:?}"
        );
    }
}

/// Regression: each SCAN / UNLINK step of a pattern delete had a deadline, the sweep as a whole
/// none: a frozen-then-slow server could keep a caller in `delete_pattern` indefinitely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_stops_at_its_overall_deadline() {
    let server = RedisServer::start();
    let cache = RedisCache::builder(server.url())
        .timeout(Duration::from_secs(5))
        .scan_count(500)
        .sweep_timeout(Some(Duration::from_millis(50)))
        .connect()
        .await
        .unwrap();
    let keys: Vec<String> = (0..200_000).map(|i| format!("sweep:{i}")).collect();
    for chunk in keys.chunks(10_000) {
        let entries: Vec<(&str, Bytes)> = chunk
            .iter()
            .map(|k| (k.as_str(), Bytes::from_static(b"v")))
            .collect();
        cache.set_many(&entries, Ttl::secs(600)).await.unwrap();
    }
    let started = Instant::now();
    let err = cache.delete_pattern("sweep:*").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // It stopped: the keys it had not reached are still there.
    let left = cache.key_count().await.unwrap();
    assert!(left > 0, "{left} keys left");
}
