//! `OneTimeTokens` on every backend: exactly-once consumption, expiry, fail-closed.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::time::Duration;

use dashcache::token::OneTimeTokens;
use dashcache::{Cache, ErrorKind, Keys, RedisCache, Ttl};
use dashcache_testkit::{RedisServer, on_every_backend};
use futures::future::join_all;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OAuthState {
    user_id: String,
    provider: String,
    alias: Option<String>,
}

fn tokens(cache: Arc<dyn Cache>) -> OneTimeTokens<OAuthState> {
    OneTimeTokens::new(
        cache,
        Keys::new("t", ["oauth_state"]).unwrap(),
        "oauth_state",
    )
}

fn state() -> OAuthState {
    OAuthState {
        user_id: "u1".into(),
        provider: "schwab".into(),
        alias: Some("main".into()),
    }
}

async fn a_token_is_consumed_exactly_once(cache: Arc<dyn Cache>) {
    let tokens = tokens(cache);
    let token = tokens.issue(&state(), Ttl::secs(600)).await.unwrap();
    assert_eq!(token.len(), 43, "256 bits, URL-safe");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_eq!(tokens.consume(&token).await.unwrap(), Some(state()));
    assert_eq!(
        tokens.consume(&token).await.unwrap(),
        None,
        "a replay finds nothing"
    );
}

async fn two_hundred_concurrent_consumers_get_one_payload(cache: Arc<dyn Cache>) {
    let tokens = tokens(cache);
    let token = tokens.issue(&state(), Ttl::secs(600)).await.unwrap();
    let consumers = (0..200).map(|_| {
        let (tokens, token) = (tokens.clone(), token.clone());
        tokio::spawn(async move { tokens.consume(&token).await })
    });
    let payloads = join_all(consumers)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap().unwrap())
        .count();
    assert_eq!(payloads, 1);
}

async fn an_expired_token_is_none(backend: &dashcache_testkit::Backend) {
    let cache = backend.cache();
    let tokens = tokens(cache);
    let token = tokens.issue(&state(), Ttl::millis(100)).await.unwrap();
    backend.wait(Duration::from_millis(300)).await;
    assert_eq!(tokens.consume(&token).await.unwrap(), None);
}

async fn garbage_is_not_a_token(cache: Arc<dyn Cache>) {
    let tokens = tokens(cache.clone());
    let long = "x".repeat(10_000);
    for garbage in ["", "*", "a b", "\n", long.as_str(), "t:oauth_state:*"] {
        assert_eq!(tokens.consume(garbage).await.unwrap(), None, "{garbage:?}");
    }
    let err = tokens.issue(&state(), Ttl::Persist).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidArgument,
        "a token must expire"
    );
    // The raw token never appears in a key.
    let token = tokens.issue(&state(), Ttl::secs(60)).await.unwrap();
    let leaked = format!("t:oauth_state:{token}");
    assert!(!cache.exists(&leaked).await.unwrap());
}

on_every_backend!(
    a_token_is_consumed_exactly_once,
    two_hundred_concurrent_consumers_get_one_payload,
    garbage_is_not_a_token,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_failure_is_an_error_never_valid() {
    let mut server = RedisServer::start();
    let cache = RedisCache::builder(server.url()).connect().await.unwrap();
    let tokens = tokens(Arc::new(cache));
    let token = tokens.issue(&state(), Ttl::secs(600)).await.unwrap();
    server.kill();
    let err = tokens.consume(&token).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(tokens.issue(&state(), Ttl::secs(600)).await.is_err());
}

// The embedded cache's clock is advanced instead of sleeping.
dashcache_testkit::on_every_backend!(|backend| &backend; an_expired_token_is_none);
