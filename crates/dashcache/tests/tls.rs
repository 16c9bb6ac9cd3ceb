//! `rediss://` against spawned TLS servers with certificates made here: the whole conformance
//! suite over TLS (one server, and the hybrid whose tracking connection speaks TLS too), a CA
//! that did not sign the server's certificate, mutual TLS with and without a client
//! certificate, and the explicit opt-out of verification.

#![cfg(feature = "tls")]
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // a panic is how a test fails

use std::sync::Arc;
use std::time::Duration;

use dashcache::redis::TlsOptions;
use dashcache::{Cache, ErrorKind, RedisCache, Ttl};
use dashcache_testkit::TlsRedis;

fn builder(url: &str, tls: TlsOptions) -> dashcache::RedisCacheBuilder {
    RedisCache::builder(url)
        .tls(tls)
        // A TLS handshake costs more than a TCP connect on a loaded test machine.
        .timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_over_tls() {
    let server = TlsRedis::start(false);
    let cache = builder(
        &server.url(),
        TlsOptions::new().ca_file(server.certs().ca()),
    )
    .connect()
    .await
    .unwrap();
    dashcache_testkit::conformance::run(Arc::new(cache.clone())).await;
    // The hybrid's tracking connection is a TLS connection of its own.
    let hybrid = dashcache_testkit::hybrid_cache(cache).await;
    dashcache_testkit::conformance::run(Arc::new(hybrid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let server = TlsRedis::start(false);
    for tls in [
        TlsOptions::new().ca_file(server.certs().other_ca()),
        // The system's roots do not know the test CA either.
        TlsOptions::new(),
    ] {
        let cache = builder(&server.url(), tls).build().unwrap();
        let e = cache
            .ping()
            .await
            .expect_err("an unverified server answered");
        assert!(
            matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Backend),
            "{e:?}"
        );
        assert!(cache.get("k").await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let server = TlsRedis::start(true);
    let ca = server.certs().ca();
    let without = builder(&server.url(), TlsOptions::new().ca_file(&ca))
        .build()
        .unwrap();
    assert!(
        without.ping().await.is_err(),
        "no client certificate, yet answered"
    );

    let (cert, key) = server.certs().client();
    let with = builder(
        &server.url(),
        TlsOptions::new().ca_file(&ca).client_cert(cert, key),
    )
    .connect()
    .await
    .unwrap();
    with.set("mtls:k", "v".into(), Ttl::secs(60)).await.unwrap();
    assert_eq!(
        with.get("mtls:k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_is_off_only_when_asked_for_explicitly() {
    let server = TlsRedis::start(false);
    let insecure_url = format!("{}/#insecure", server.url());
    let e = builder(&insecure_url, TlsOptions::new())
        .build()
        .expect_err("#insecure without the opt-in");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    let cache = builder(
        &server.url(),
        TlsOptions::new().danger_accept_invalid_certs(),
    )
    .connect()
    .await
    .unwrap();
    cache
        .set("insecure:k", "v".into(), Ttl::secs(60))
        .await
        .unwrap();
    assert!(cache.get("insecure:k").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_fail_at_build_with_a_clear_error() {
    let server = TlsRedis::start(false);
    let missing = builder(
        &server.url(),
        TlsOptions::new().ca_file("/nonexistent/ca.pem"),
    )
    .build()
    .expect_err("a missing CA file");
    assert_eq!(missing.kind(), ErrorKind::InvalidArgument);
    assert!(
        missing.to_string().contains("/nonexistent/ca.pem"),
        "{missing}"
    );

    let plain = format!("redis://127.0.0.1:{}", server.tls_port());
    let e = builder(&plain, TlsOptions::new().ca_file(server.certs().ca()))
        .build()
        .expect_err("TLS settings on a redis:// URL");
    assert!(e.to_string().contains("rediss://"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_conforms() {
    let certs = dashcache_testkit::TestCerts::generate();
    let cluster =
        tokio::task::block_in_place(|| dashcache_testkit::RedisCluster::start_tls(&certs));
    let cache = builder(&cluster.tls_url(), TlsOptions::new().ca_file(certs.ca()))
        .connect()
        .await
        .unwrap();
    assert!(cache.is_cluster());
    dashcache_testkit::conformance::run(Arc::new(cache)).await;
}
